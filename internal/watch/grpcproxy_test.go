package watch_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// TestLivenessThroughGRPCProxy runs a Watcher through etcd's own gRPC
// proxy (etcd grpc-proxy start), which does not answer progress requests.
// The Watcher must find a liveness signal the proxy passes, say so once,
// stay on its watch while idle (no resync, so no read of the prefix), still
// deliver puts, and still notice an etcd behind the proxy that stalls or
// dies.
func TestLivenessThroughGRPCProxy(t *testing.T) {
	t.Parallel() // etcd and the proxy run as processes; most of the time is waiting
	c := etcdproc.StartCluster(t, 1)
	m := c.Member(0)
	direct := c.Client(t)
	p := etcdproc.StartGRPCProxy(t, c.Endpoints())
	put(t, direct, "/app/a", "1")

	o := withPrefix(fast, "/app/")
	o.Client = p.Client(t)
	o.ProgressInterval = time.Second
	h := startWatcher(t, nil, o)
	nextReset(t, h)

	line := waitLog(t, h.logs, "INFO", "liveness signal")
	if !strings.Contains(line, watch.LivenessProbe) {
		t.Fatalf("liveness log line = %q, want the signal %q", line, watch.LivenessProbe)
	}
	st := waitStatus(t, h.w, "the liveness signal", func(st watch.Status) bool { return st.Liveness != "" })
	if got, want := st.Liveness, watch.LivenessProbe; got != want {
		t.Fatalf("Status().Liveness = %q, want %q", got, want)
	}

	t.Run("idle", func(t *testing.T) {
		// Six more probes are six more intervals with the watch kept.
		before := h.w.Status().Probes
		deadline := time.After(wait)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for h.w.Status().Probes < before+6 {
			select {
			case b := <-h.ch:
				t.Fatalf("batch while idle through the proxy: Reset=%v Cause=%q", b.Reset, b.Cause)
			case <-deadline:
				t.Fatalf("only %d probes confirmed within %v", h.w.Status().Probes-before, wait)
			case <-tick.C:
			}
		}
		if got, want := h.w.Status().Resyncs, map[string]int64{watch.CauseInitial: 1}; !maps.Equal(got, want) {
			t.Errorf("Resyncs after 6 idle intervals = %v, want %v", got, want)
		}
		for n := len(h.logs); n > 0; n-- {
			if l := <-h.logs; strings.Contains(l, "liveness signal") || strings.Contains(l, "lost continuity") {
				t.Errorf("logged while idle: %s", l)
			}
		}
	})

	t.Run("put", func(t *testing.T) {
		rev := put(t, direct, "/app/b", "2")
		if b := next(t, h.ch, wait); b.Reset || b.Rev != rev || content(b.Changes)["b"] != "2" {
			t.Fatalf("batch = %+v, want the put at rev %d", b, rev)
		}
	})

	for _, tc := range []struct {
		name       string
		stop, back func()
	}{
		{"stalled etcd", m.Pause, m.Resume},
		{"killed etcd", m.Kill, m.Start},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.stop()
			waitLog(t, h.logs, "WARN", "lost continuity", watch.CauseProgressTimeout, "probe watches")
			tc.back()
			b := nextReset(t, h)
			if got, want := watch.CauseKind(b.Cause), watch.CauseProgressTimeout; got != want {
				t.Errorf("Cause = %q, want kind %q", b.Cause, want)
			}
			rev := put(t, direct, "/app/c", tc.name)
			if b := next(t, h.ch, wait); b.Reset || b.Rev != rev {
				t.Fatalf("batch after %s = %+v, want the put at rev %d", tc.name, b, rev)
			}
		})
	}
}
