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
	full    map[string][]byte        // when reset, unless the snapshot came in pages
	changes map[string]writer.Change // when !reset, or after a paged snapshot
	rev     int64

	// A snapshot in pages (watch.Options.PagedResets) is written page by
	// page as it arrives (see Daemon.page), never held here: paging is set
	// from its first page to its last, and after the last, reset is set and
	// synced holds what writing it did.
	paging  bool
	synced  writer.Result
	syncErr error

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
	files := p.split(b, patternPrefix)
	if b.Reset {
		p.reset, p.changes, p.paging = true, nil, false
		p.full = make(map[string][]byte, len(files))
		for _, c := range files {
			p.full[c.Key] = c.Value
		}
		return
	}
	for _, c := range files {
		switch {
		case p.full != nil && c.Delete:
			delete(p.full, c.Key)
		case p.full != nil:
			p.full[c.Key] = c.Value
		default:
			if p.changes == nil {
				p.changes = map[string]writer.Change{}
			}
			p.changes[c.Key] = writer.Change{Key: c.Key, Value: c.Value, Delete: c.Delete}
		}
	}
}

// addPage takes one page of a paged snapshot: the pattern keys go to
// patterns; the files are returned, to be written at once. The first
// page drops what is pending for the files (the snapshot supersedes it);
// the last marks the files as a complete snapshot.
func (p *pending) addPage(b watch.Batch, patternPrefix string) []writer.Change {
	p.rev = b.Rev
	if b.Page == 0 {
		if patternPrefix != "" {
			p.patterns, p.patternsReset = map[string]patternChange{}, true
		}
		p.reset, p.full, p.changes, p.paging = false, nil, nil, true
		p.synced, p.syncErr = writer.Result{}, nil
	}
	files := p.split(b, patternPrefix)
	out := make([]writer.Change, len(files))
	for i, c := range files {
		out[i] = writer.Change{Key: c.Key, Value: c.Value}
	}
	if !b.Partial {
		p.paging, p.reset = false, true
	}
	return out
}

// split puts the pattern keys of b into p.patterns and returns the files.
func (p *pending) split(b watch.Batch, patternPrefix string) []watch.Change {
	if patternPrefix == "" {
		return b.Changes
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
	return files
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
func (p *pending) takeFiles() {
	p.reset, p.full, p.changes = false, nil, nil
	p.synced, p.syncErr = writer.Result{}, nil
}

// takePatterns returns the pattern part and empties it.
func (p *pending) takePatterns() (changes map[string]patternChange, reset bool) {
	changes, reset = p.patterns, p.patternsReset
	p.patterns, p.patternsReset = nil, false
	return changes, reset
}
