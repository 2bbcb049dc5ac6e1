package watch_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// putKeys puts n keys /app/k000… and returns their content and the last
// revision.
func putKeys(t *testing.T, c *clientv3.Client, n int) (map[string]string, int64) {
	t.Helper()
	want := map[string]string{}
	var rev int64
	for i := range n {
		k := fmt.Sprintf("k%03d", i)
		want[k] = "v" + k
		rev = put(t, c, "/app/"+k, want[k])
	}
	return want, rev
}

// TestPagedResetsSendOneBatchPerPage: with PagedResets, a snapshot of 23
// keys read 5 at a time arrives as 5 Reset batches at one revision, pages
// 0…4 in key order, Partial on all but the last; then the watch follows.
func TestPagedResetsSendOneBatchPerPage(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	want, rev := putKeys(t, c, 23)
	o := withPrefix(fast, "/app/")
	o.PageSize, o.PagedResets = 5, true
	h := startWatcher(t, s, o)

	var all []watch.Change
	for i := range 5 {
		b := nextReset(t, h)
		if b.Page != i || b.Rev != rev || b.Cause != watch.CauseInitial || b.More {
			t.Fatalf("batch %d = {Page:%d Rev:%d Cause:%q More:%v}, want {Page:%d Rev:%d Cause:%q More:false}",
				i, b.Page, b.Rev, b.Cause, b.More, i, rev, watch.CauseInitial)
		}
		if got, want := b.Partial, i < 4; got != want {
			t.Fatalf("page %d: Partial = %v, want %v", i, got, want)
		}
		if got, want := len(b.Changes), min(5, 23-5*i); got != want {
			t.Fatalf("page %d has %d changes, want %d", i, got, want)
		}
		all = append(all, b.Changes...)
	}
	if !slices.IsSortedFunc(all, func(a, b watch.Change) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("pages are not in key order")
	}
	if got := content(all); !maps.Equal(got, want) {
		t.Errorf("content of the pages = %v\nwant %v", got, want)
	}
	st := waitStatus(t, h.w, "the last page", func(st watch.Status) bool { return st.Rev != 0 })
	if got, want := st.Resyncs, map[string]int64{watch.CauseInitial: 1}; st.Rev != rev || !maps.Equal(got, want) {
		t.Errorf("Status() = {Rev:%d Resyncs:%v}, want {Rev:%d Resyncs:%v}", st.Rev, got, rev, want)
	}

	rev = put(t, c, "/app/after", "1")
	if b := next(t, h.ch, wait); b.Reset || b.Rev != rev || b.Page != 0 || b.Partial {
		t.Fatalf("batch after the snapshot = %+v, want a revision batch at %d", b, rev)
	}
}

// TestPagedResetRetriedFromPageZero: when a page cannot be read (its
// revision was compacted while the consumer held the previous pages), the
// snapshot is read again and the consumer sees Page 0 again, at the new
// revision. It also holds the Watcher to reading at most one page ahead of
// the consumer: one that read all pages up front would never ask for the
// compacted revision.
func TestPagedResetRetriedFromPageZero(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	want, rev := putKeys(t, c, 12)
	o := withPrefix(fast, "/app/")
	o.PageSize, o.PagedResets = 3, true
	h := startWatcher(t, s, o)

	if b := nextReset(t, h); b.Page != 0 || b.Rev != rev || !b.Partial {
		t.Fatalf("first batch = {Page:%d Rev:%d Partial:%v}, want {Page:0 Rev:%d Partial:true}", b.Page, b.Rev, b.Partial, rev)
	}
	// Page 1 may already be read; page 2 is read only after page 1 is
	// received, so it asks for a revision compacted by then.
	want["new"] = "n"
	newRev := put(t, c, "/app/new", "n")
	if _, err := c.Compact(ctxT(t), newRev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if b := nextReset(t, h); b.Page != 1 || b.Rev != rev {
		t.Fatalf("second batch = {Page:%d Rev:%d}, want {Page:1 Rev:%d}", b.Page, b.Rev, rev)
	}
	waitLog(t, h.logs, "etcd get /app/ failed", "compacted")

	var all []watch.Change
	for i := 0; ; i++ {
		b := nextReset(t, h)
		if b.Page != i || b.Rev != newRev || b.Cause != watch.CauseInitial {
			t.Fatalf("batch %d after the retry = {Page:%d Rev:%d Cause:%q}, want {Page:%d Rev:%d Cause:%q}",
				i, b.Page, b.Rev, b.Cause, i, newRev, watch.CauseInitial)
		}
		all = append(all, b.Changes...)
		if !b.Partial {
			break
		}
		if i >= 5 {
			t.Fatalf("page %d of 13 keys read 3 at a time is still Partial", i)
		}
	}
	if got := content(all); !maps.Equal(got, want) {
		t.Errorf("content after the retry = %v\nwant %v", got, want)
	}
	st := waitStatus(t, h.w, "the last page", func(st watch.Status) bool { return st.Rev != 0 })
	if got, want := st.Resyncs, map[string]int64{watch.CauseInitial: 1}; st.Rev != newRev || !maps.Equal(got, want) {
		t.Errorf("Status() = {Rev:%d Resyncs:%v}, want {Rev:%d Resyncs:%v}", st.Rev, got, newRev, want)
	}
}

// TestUnpagedResetIsOneBatch: without PagedResets, a snapshot read in
// several pages is still one Reset batch with Page 0 and Partial false.
func TestUnpagedResetIsOneBatch(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	want, rev := putKeys(t, c, 23)
	o := withPrefix(fast, "/app/")
	o.PageSize = 5
	h := startWatcher(t, s, o)
	b := nextReset(t, h)
	if b.Page != 0 || b.Partial || b.Rev != rev {
		t.Fatalf("Reset = {Page:%d Partial:%v Rev:%d}, want {Page:0 Partial:false Rev:%d}", b.Page, b.Partial, b.Rev, rev)
	}
	if got := content(b.Changes); !maps.Equal(got, want) {
		t.Errorf("content = %v\nwant %v", got, want)
	}
	rev = put(t, c, "/app/after", "1")
	if b := next(t, h.ch, wait); b.Reset || b.Rev != rev {
		t.Fatalf("batch after the snapshot = %+v, want a revision batch at %d", b, rev)
	}
}
