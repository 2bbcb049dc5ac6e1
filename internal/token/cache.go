package token

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/expr-lang/expr/vm"
)

// Limits of the verified-token cache. Sizes count token text; the decoded
// claims kept for a token take about twice its size.
const (
	verifiedEntries = 64
	verifiedBytes   = 8 << 20
	verifiedMaxOne  = 2 << 20
)

// verified is the process's cache of tokens whose signature checked out.
var verified = newVerifiedCache(verifiedEntries, verifiedBytes, verifiedMaxOne)

// verifiedCache remembers, for a token and the exact list of verify keys
// it was checked against, the decoded claims and the key that verified
// it: steps 1 to 3 of Verify, which depend on nothing else. Times and the
// jwtRule (steps 4 and 5) depend on the clock and the configuration and
// are checked on every use. Refusals are not cached.
//
// The key is a SHA-256 of the keys (type, ID and DER, in order) and the
// token text, so a token or key list that differs in any byte is another
// entry. It hands out copies of the claims, never the cached value. It is
// safe for concurrent use and holds at most max entries and maxBytes of
// token text, evicting the least recently used.
type verifiedCache struct {
	max, maxBytes, maxOne int

	mu    sync.Mutex
	bytes int
	lru   list.List // of *verifiedEntry, most recently used first
	byKey map[[sha256.Size]byte]*list.Element
}

type verifiedEntry struct {
	key    [sha256.Size]byte
	size   int
	claims *Claims
	by     PublicKey
}

func newVerifiedCache(max, maxBytes, maxOne int) *verifiedCache {
	return &verifiedCache{max: max, maxBytes: maxBytes, maxOne: maxOne, byKey: map[[sha256.Size]byte]*list.Element{}}
}

// cacheKey returns the cache key of token checked against keys.
func cacheKey(token string, keys PublicKeys) [sha256.Size]byte {
	h := sha256.New()
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.Key)
		if err != nil {
			der = nil // such a key verifies nothing; it still takes its place in the order
		}
		put(h, k.Type)
		put(h, k.ID)
		put(h, string(der))
	}
	put(h, token)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// put writes s to h, length-prefixed so that no two sequences of strings
// hash the same input.
func put(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	io.WriteString(h, s)
}

// get returns a copy of the claims cached under key and the key that
// verified them.
func (c *verifiedCache) get(key [sha256.Size]byte) (*Claims, PublicKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil, PublicKey{}, false
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*verifiedEntry)
	return e.claims.clone(), e.by, true
}

// add caches a copy of claims, verified by the key by, for a token of
// size bytes, then evicts down to the limits.
func (c *verifiedCache) add(key [sha256.Size]byte, size int, claims *Claims, by PublicKey) {
	if size > c.maxOne {
		return
	}
	e := &verifiedEntry{key: key, size: size, claims: claims.clone(), by: by}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[key]; ok {
		return
	}
	c.byKey[key] = c.lru.PushFront(e)
	c.bytes += size
	for c.lru.Len() > c.max || c.bytes > c.maxBytes {
		old := c.lru.Remove(c.lru.Back()).(*verifiedEntry)
		delete(c.byKey, old.key)
		c.bytes -= old.size
	}
}

// clone returns a copy of c that shares no map or slice with it.
func (c *Claims) clone() *Claims {
	d := *c
	d.Audience = slices.Clone(c.Audience)
	d.Pattern.Files = maps.Clone(c.Pattern.Files)
	d.RunVars = cloneMap(c.RunVars)
	d.Cache = cloneMap(c.Cache)
	d.Extra = cloneMap(c.Extra)
	return &d
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

// cloneValue deep-copies a decoded JSON value; scalars are immutable.
func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneMap(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}

// Limits of the compiled-rule cache: jwtRule values come from the
// configuration, so a process sees few of them.
const (
	rulesMax    = 32
	rulesMaxLen = 4 << 10
)

// rules caches compiled jwtRule programs by rule text. expr-lang programs
// are safe for concurrent use. When full, an arbitrary entry is dropped.
var rules struct {
	mu    sync.Mutex
	progs map[string]*vm.Program
}

// compiledRule returns the compiled program of rule, compiling it once.
// Compile errors are not cached.
func compiledRule(rule string) (*vm.Program, error) {
	rules.mu.Lock()
	prog, ok := rules.progs[rule]
	rules.mu.Unlock()
	if ok {
		return prog, nil
	}
	prog, err := compileRule(rule)
	if err != nil || len(rule) > rulesMaxLen {
		return prog, err
	}
	rules.mu.Lock()
	defer rules.mu.Unlock()
	if rules.progs == nil {
		rules.progs = map[string]*vm.Program{}
	}
	for k := range rules.progs {
		if len(rules.progs) < rulesMax {
			break
		}
		delete(rules.progs, k)
	}
	rules.progs[rule] = prog
	return prog, nil
}
