package watch_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// TestCatchUpAfterSnapshotIsOneRun checks Batch.More on the first watch
// response after a snapshot. The watch starts at the snapshot's revision,
// whose event is dropped; etcd still counts it in its 1000-revision chunk,
// so a catch-up of 1500 revisions arrives as 999 batches and then 501. The
// consumer must see one run of More=true ending in exactly one More=false,
// at the last revision, so that it writes (and signals) once.
func TestCatchUpAfterSnapshotIsOneRun(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	// The snapshot's revision touches the prefix, so the watch's first
	// response carries an event the Watcher drops.
	snapRev := put(t, c, "/app/base", "snap")
	h := startWatcher(t, s, watch.Options{Prefix: "/app/"})
	// LastHeard is set once the snapshot has been read. The Watcher then
	// blocks sending the Reset (h.ch is unbuffered and not yet read), so it
	// starts watching only after every put below: a catch-up.
	waitStatus(t, h.w, "the snapshot read", func(st watch.Status) bool { return !st.LastHeard.IsZero() })

	const n, workers = 1500, 4
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range n / workers {
				if _, err := c.Put(ctx, fmt.Sprintf("/app/w%d/%d", w, i), "v"); err != nil {
					t.Errorf("put: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	last := snapRev + n // nothing else writes, so every revision is one put

	if b := nextReset(t, h); b.Rev != snapRev {
		t.Fatalf("Reset at rev %d, want %d (the snapshot was read after the puts began)", b.Rev, snapRev)
	}
	for want := snapRev + 1; want <= last; want++ {
		b := next(t, h.ch, wait)
		if b.Reset || b.Rev != want {
			t.Fatalf("batch = {Rev:%d Reset:%v}, want {Rev:%d Reset:false}", b.Rev, b.Reset, want)
		}
		if b.Rev < last && !b.More {
			t.Fatalf("batch at rev %d has More=false with %d revisions of the catch-up still to come: the consumer would write and signal twice", b.Rev, last-b.Rev)
		}
		if b.Rev == last && b.More {
			t.Fatalf("the last batch of the catch-up (rev %d) has More=true", b.Rev)
		}
	}
}
