package writer

import (
	"fmt"
	"strings"
)

// keyIndex is the validity of every desired key, kept up to date key by key
// so that an Apply costs what it changes, not what the desired state holds.
// It always agrees with [partition] of the desired state.
type keyIndex struct {
	valid    map[string]bool      // valid keys
	under    map[string]int       // syntactically valid keys strictly below each directory
	tops     map[string]int       // valid keys per top-level name
	rejected map[string]Rejection // keys rejected by ValidateKey or as a conflict
	other    map[string]string    // conflict key → the smallest key below it
}

// buildIndex computes the index of desired from scratch.
func buildIndex(desired map[string][]byte) *keyIndex {
	x := &keyIndex{
		valid:    make(map[string]bool, len(desired)),
		under:    make(map[string]int),
		tops:     make(map[string]int),
		rejected: make(map[string]Rejection),
		other:    make(map[string]string),
	}
	smallest := make(map[string]string)
	for k := range desired {
		if ValidateKey(k) != nil {
			continue
		}
		for _, d := range parents(k) {
			x.under[d]++
			if s, ok := smallest[d]; !ok || k < s {
				smallest[d] = k
			}
		}
	}
	for k := range desired {
		if x.under[k] > 0 {
			x.other[k] = smallest[k]
		}
		x.refresh(k, desired)
	}
	return x
}

// set applies c to desired and to the index, and adds to touched every key
// whose validity or rejection may have changed: c.Key, and the directories
// above it that are keys too (a file where c.Key needs a directory).
func (x *keyIndex) set(desired map[string][]byte, c Change, touched map[string]bool) {
	_, had := desired[c.Key]
	if c.Delete {
		delete(desired, c.Key)
	} else {
		desired[c.Key] = clone(c.Value)
	}
	touched[c.Key] = true
	if had != c.Delete || ValidateKey(c.Key) != nil {
		return // the set of valid keys did not change
	}
	for _, d := range parents(c.Key) {
		if c.Delete {
			if x.under[d]--; x.under[d] == 0 {
				delete(x.under, d)
			}
		} else {
			x.under[d]++
		}
		if _, ok := desired[d]; !ok {
			continue
		}
		touched[d] = true
		o, ok := x.other[d]
		switch {
		case c.Delete && ok && o == c.Key:
			delete(x.other, d) // refresh finds the next smallest
		case !c.Delete && (ok && c.Key < o || x.under[d] == 1):
			x.other[d] = c.Key
		}
	}
}

// refresh recomputes whether k is valid or why it is rejected.
func (x *keyIndex) refresh(k string, desired map[string][]byte) {
	_, present := desired[k]
	ok := false
	delete(x.rejected, k)
	switch err := ValidateKey(k); {
	case !present:
		delete(x.other, k)
	case err != nil:
		x.rejected[k] = err.(Rejection)
	case x.under[k] > 0:
		o, known := x.other[k]
		if !known {
			o = smallestUnder(desired, k)
			x.other[k] = o
		}
		x.rejected[k] = reject(k, ReasonConflict, fmt.Sprintf("is a directory for key %q; rename or delete one of them", o))
	default:
		ok = true
		delete(x.other, k)
	}
	if ok == x.valid[k] {
		return
	}
	t := topName(k)
	if ok {
		x.valid[k] = true
		x.tops[t]++
		return
	}
	delete(x.valid, k)
	if x.tops[t]--; x.tops[t] == 0 {
		delete(x.tops, t)
	}
}

// smallestUnder returns the smallest valid-looking key below directory d.
// It reads the whole desired state, which happens only when a key becomes a
// conflict or loses the key its rejection names.
func smallestUnder(desired map[string][]byte, d string) string {
	best := ""
	for k := range desired {
		if strings.HasPrefix(k, d+"/") && (best == "" || k < best) && ValidateKey(k) == nil {
			best = k
		}
	}
	return best
}
