package daemon

import (
	"maps"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/watch"
)

// TestPendingSplitsFilesAndPatterns: pattern keys go to the pattern part
// by prefix, the rest to the files; a Reset replaces both parts, so a
// pattern changed before it is not kept, and taking one part leaves the
// other.
func TestPendingSplitsFilesAndPatterns(t *testing.T) {
	const pp = "/app/patterns/"
	var p pending
	p.add(watch.Batch{Rev: 1, Changes: []watch.Change{
		{Key: "old", Prefix: pp, Value: []byte("j0")},
		{Key: "a", Prefix: "/app/files/", Value: []byte("1")},
	}}, pp)
	p.add(watch.Batch{Rev: 2, Reset: true, Changes: []watch.Change{
		{Key: "a", Prefix: "/app/files/", Value: []byte("2")},
		{Key: "web", Prefix: pp, Value: []byte("j1")},
	}}, pp)
	p.add(watch.Batch{Rev: 3, Changes: []watch.Change{
		{Key: "db", Prefix: pp, Value: []byte("j2")},
		{Key: "web", Prefix: pp, Delete: true},
		{Key: "b", Prefix: "/app/files/", Value: []byte("3")},
	}}, pp)
	if want := map[string][]byte{"a": []byte("2"), "b": []byte("3")}; !p.reset || !maps.EqualFunc(p.full, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("files: reset %v, full %q; want a reset with %q", p.reset, p.full, want)
	}
	p.takeFiles()
	if p.reset || p.full != nil || p.changes != nil {
		t.Fatal("takeFiles left file changes")
	}
	got, reset := p.takePatterns()
	want := map[string]patternChange{"web": {deleted: true}, "db": {jwt: "j2"}}
	if !reset || !maps.Equal(got, want) {
		t.Fatalf("patterns: reset %v, %v; want a reset with %v (the change before the reset dropped)", reset, got, want)
	}
	if got, reset := p.takePatterns(); got != nil || reset {
		t.Fatalf("second takePatterns = %v, %v; want nothing", got, reset)
	}

	var q pending // without patterns every key is a file
	q.add(watch.Batch{Rev: 4, Changes: []watch.Change{{Key: "x", Prefix: "/f/", Value: []byte("1")}}}, "")
	if len(q.list()) != 1 || q.patterns != nil {
		t.Fatalf("without patterns: files %v, patterns %v", q.list(), q.patterns)
	}
}
