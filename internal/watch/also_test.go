package watch_test

import (
	"maps"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// byPrefix turns changes into "prefix|key" → value, "<deleted>" for deletes.
func byPrefix(cs []watch.Change) map[string]string {
	m := make(map[string]string, len(cs))
	for _, c := range cs {
		v := string(c.Value)
		if c.Delete {
			v = "<deleted>"
		}
		m[c.Prefix+"|"+c.Key] = v
	}
	return m
}

// TestAlsoFollowsTwoPrefixesInOneStream: with Options.Also, the snapshot
// holds both prefixes at one revision (paged, keys between them dropped),
// a transaction touching both is one batch, and a revision that touches
// only keys between or around the prefixes yields no batch.
func TestAlsoFollowsTwoPrefixesInOneStream(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/app/files/a", "1")
	put(t, c, "/app/files-old/x", "between") // inside the watched range, outside both prefixes
	put(t, c, "/app/patterns/web", "jwt1")
	put(t, c, "/app/patterns0", "after") // just past the range
	rev := put(t, c, "/app/aaa", "before")

	h := startWatcher(t, s, watch.Options{Prefix: "/app/files/", Also: []string{"/app/patterns/"}, PageSize: 1})
	b := nextReset(t, h)
	want := map[string]string{"/app/files/|a": "1", "/app/patterns/|web": "jwt1"}
	if got := byPrefix(b.Changes); b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("snapshot at rev %d = %v, want rev %d %v", b.Rev, got, rev, want)
	}

	rev = txn(t, c, clientv3.OpPut("/app/files/b", "2"), clientv3.OpPut("/app/patterns/web", "jwt2"),
		clientv3.OpPut("/app/files-old/y", "between"))
	b = next(t, h.ch, wait)
	want = map[string]string{"/app/files/|b": "2", "/app/patterns/|web": "jwt2"}
	if got := byPrefix(b.Changes); b.Rev != rev || b.Reset || !maps.Equal(got, want) {
		t.Fatalf("batch at rev %d (reset %v) = %v, want rev %d %v", b.Rev, b.Reset, got, rev, want)
	}

	put(t, c, "/app/files-old/z", "between")
	put(t, c, "/app/patterns0", "after2")
	rev = txn(t, c, clientv3.OpDelete("/app/patterns/web"))
	b = next(t, h.ch, wait)
	want = map[string]string{"/app/patterns/|web": "<deleted>"}
	if got := byPrefix(b.Changes); b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("after foreign-only revisions: batch at rev %d = %v, want rev %d %v", b.Rev, got, rev, want)
	}
}
