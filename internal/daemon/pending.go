package daemon

import (
	"maps"
	"slices"

	"github.com/dispenser-dev/dispenser/internal/watch"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// pending merges the batches that arrived since the last write, so that a
// burst (a catch-up after a reconnect, or --wait) becomes one write and one
// signal. For the files: after a reset it holds the whole state; otherwise
// the last change per key. For the patterns: the last value per name, and
// after a reset the whole set.
type pending struct {
	reset   bool
	full    map[string][]byte        // when reset
	changes map[string]writer.Change // when !reset
	rev     int64

	patterns      map[string]patternChange // by source name; nil when none changed
	patternsReset bool                     // patterns holds every pattern key
}

// patternChange is a pattern key's latest state.
type patternChange struct {
	jwt     string
	deleted bool
}

// add merges b; patternPrefix ("" when patterns are off) tells pattern
// keys from files.
func (p *pending) add(b watch.Batch, patternPrefix string) {
	p.rev = b.Rev
	if b.Reset && patternPrefix != "" { // the complete set of pattern keys follows
		p.patterns, p.patternsReset = map[string]patternChange{}, true
	}
	var files []watch.Change
	for _, c := range b.Changes {
		if patternPrefix != "" && c.Prefix == patternPrefix {
			if p.patterns == nil {
				p.patterns = map[string]patternChange{}
			}
			p.patterns[c.Key] = patternChange{jwt: string(c.Value), deleted: c.Delete}
			continue
		}
		files = append(files, c)
	}
	if b.Reset {
		p.reset, p.changes = true, nil
		p.full = make(map[string][]byte, len(files))
		for _, c := range files {
			p.full[c.Key] = c.Value
		}
		return
	}
	for _, c := range files {
		switch {
		case p.reset && c.Delete:
			delete(p.full, c.Key)
		case p.reset:
			p.full[c.Key] = c.Value
		default:
			if p.changes == nil {
				p.changes = map[string]writer.Change{}
			}
			p.changes[c.Key] = writer.Change{Key: c.Key, Value: c.Value, Delete: c.Delete}
		}
	}
}

// list returns the merged file changes in key order.
func (p *pending) list() []writer.Change {
	keys := slices.Sorted(maps.Keys(p.changes))
	out := make([]writer.Change, len(keys))
	for i, k := range keys {
		out[i] = p.changes[k]
	}
	return out
}

// takeFiles empties the file part.
func (p *pending) takeFiles() { p.reset, p.full, p.changes = false, nil, nil }

// takePatterns returns the pattern part and empties it.
func (p *pending) takePatterns() (changes map[string]patternChange, reset bool) {
	changes, reset = p.patterns, p.patternsReset
	p.patterns, p.patternsReset = nil, false
	return changes, reset
}
