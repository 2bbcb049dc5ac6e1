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
	put(t, c, "/app/m/x", "between") // inside the watched range, outside both prefixes
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
		clientv3.OpPut("/app/m/y", "between"))
	b = next(t, h.ch, wait)
	want = map[string]string{"/app/files/|b": "2", "/app/patterns/|web": "jwt2"}
	if got := byPrefix(b.Changes); b.Rev != rev || b.Reset || !maps.Equal(got, want) {
		t.Fatalf("batch at rev %d (reset %v) = %v, want rev %d %v", b.Rev, b.Reset, got, rev, want)
	}

	put(t, c, "/app/m/z", "between")
	put(t, c, "/app/patterns0", "after2")
	rev = txn(t, c, clientv3.OpDelete("/app/patterns/web"))
	b = next(t, h.ch, wait)
	want = map[string]string{"/app/patterns/|web": "<deleted>"}
	if got := byPrefix(b.Changes); b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("after foreign-only revisions: batch at rev %d = %v, want rev %d %v", b.Rev, got, rev, want)
	}
}

// TestAlsoResyncsAfterCompaction: with two prefixes, a compaction while
// the watcher was away gives one Reset holding both prefixes' keys (a
// pattern key deleted meanwhile is absent) and no key from between them.
func TestAlsoResyncsAfterCompaction(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/app/files/a", "1")
	put(t, c, "/app/patterns/web", "jwt1")
	opts := withPrefix(fast, "/app/files/")
	opts.Also = []string{"/app/patterns/"}
	h := startWatcher(t, s, opts)
	nextReset(t, h)
	waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected })

	rev := changeWhileAway(t, s, func(other *clientv3.Client) int64 {
		put(t, other, "/app/files/a", "2")
		put(t, other, "/app/m/x", "between")
		if _, err := other.Delete(ctxT(t), "/app/patterns/web"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		return put(t, other, "/app/patterns/db", "jwt2")
	})

	b := nextReset(t, h)
	want := map[string]string{"/app/files/|a": "2", "/app/patterns/|db": "jwt2"}
	if got := byPrefix(b.Changes); watch.CauseKind(b.Cause) != watch.CauseCompacted || b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("resync: cause %q rev %d %v; want compacted, rev %d %v", b.Cause, b.Rev, got, rev, want)
	}
}
