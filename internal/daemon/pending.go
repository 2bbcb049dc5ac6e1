package daemon

import (
	"maps"
	"slices"

	"github.com/dispenser-dev/dispenser/internal/watch"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// pending merges the batches that arrived since the last write, so that a
// burst (a catch-up after a reconnect, or --wait) becomes one write and one
// signal. After a reset it holds the whole state; otherwise the last change
// per key.
type pending struct {
	reset   bool
	full    map[string][]byte        // when reset
	changes map[string]writer.Change // when !reset
	rev     int64
}

func (p *pending) add(b watch.Batch) {
	p.rev = b.Rev
	if b.Reset {
		p.reset, p.changes = true, nil
		p.full = make(map[string][]byte, len(b.Changes))
		for _, c := range b.Changes {
			p.full[c.Key] = c.Value
		}
		return
	}
	for _, c := range b.Changes {
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

// list returns the merged changes in key order.
func (p *pending) list() []writer.Change {
	keys := slices.Sorted(maps.Keys(p.changes))
	out := make([]writer.Change, len(keys))
	for i, k := range keys {
		out[i] = p.changes[k]
	}
	return out
}
