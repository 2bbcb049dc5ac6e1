package pattern

import (
	"crypto/sha256"
	"io"
	"reflect"
	"sync"
)

// Limits of the decoded-pattern cache, in entries and in bytes of rendered
// JSON; a decoded pattern takes a few times its JSON.
const (
	decodedEntries = 32
	decodedBytes   = 4 << 20
	decodedMaxOne  = decodedBytes / 4
)

// decoded caches decode's results by a SHA-256 of the rendered JSON.
// decode is a function of that text alone, and re-running the same JWT
// usually renders the same text again, so only the decoding (a good part
// of a render, issue 10 item 5) is skipped: the Jsonnet is still
// evaluated, with its natives, on every render. Errors are not cached. It
// hands out deep copies, never the cached value, and is safe for
// concurrent use.
var decoded = struct {
	mu      sync.Mutex
	entries *lru[[sha256.Size]byte, *Pattern]
}{entries: newLRU[[sha256.Size]byte, *Pattern](decodedEntries, decodedBytes)}

// decodeCached is decode with the decoded cache.
func decodeCached(out string) (*Pattern, error) {
	h := sha256.New()
	io.WriteString(h, out)
	var key [sha256.Size]byte
	h.Sum(key[:0])
	decoded.mu.Lock()
	p, ok := decoded.entries.get(key)
	decoded.mu.Unlock()
	if ok {
		return clonePattern(p), nil
	}
	p, err := decode(out)
	if err != nil || len(out) > decodedMaxOne {
		return p, err
	}
	keep := clonePattern(p)
	decoded.mu.Lock()
	decoded.entries.add(key, len(out), keep)
	decoded.mu.Unlock()
	return p, nil
}

// clonePattern returns a copy of p that shares no pointer, slice or map
// with it; nil and empty slices and maps stay nil and empty. Unexported struct
// fields are copied as they are (decoded patterns have none).
func clonePattern(p *Pattern) *Pattern {
	return copyValue(reflect.ValueOf(p)).Interface().(*Pattern)
}

func copyValue(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(copyValue(v.Elem()))
		return p
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(copyValue(v.Index(i)))
		}
		return s
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			m.SetMapIndex(it.Key(), copyValue(it.Value()))
		}
		return m
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(copyValue(v.Elem()))
		return out
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		for i := range v.NumField() {
			if f := out.Field(i); f.CanSet() {
				f.Set(copyValue(v.Field(i)))
			}
		}
		return out
	}
	return v
}
