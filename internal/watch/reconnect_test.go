package watch_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// fast keeps retries quick in tests.
var fast = watch.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, RequestTimeout: 2 * time.Second}

func withPrefix(o watch.Options, prefix string) watch.Options {
	o.Prefix = prefix
	return o
}

func TestCompactionWhileDisconnectedResyncs(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/app/a", "1")
	put(t, c, "/app/b", "1")
	put(t, c, "/app/c", "1")
	h := startWatcher(t, s, withPrefix(fast, "/app/"))
	nextReset(t, h)
	waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected })

	rev := changeWhileAway(t, s, func(other *clientv3.Client) int64 {
		put(t, other, "/app/a", "2")
		if _, err := other.Delete(ctxT(t), "/app/b"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		return put(t, other, "/app/d", "new")
	})

	b := nextReset(t, h)
	if got, want := watch.CauseKind(b.Cause), watch.CauseCompacted; got != want {
		t.Errorf("Cause = %q, want kind %q", b.Cause, want)
	}
	if got, want := content(b.Changes), map[string]string{"a": "2", "c": "1", "d": "new"}; !maps.Equal(got, want) {
		t.Errorf("content = %v, want %v", got, want)
	}
	if got, want := b.Rev, rev; got != want {
		t.Errorf("Rev = %d, want %d", got, want)
	}
	waitLog(t, h.logs, "WARN", "lost continuity", "compacted")

	// And it follows changes again.
	rev = put(t, c, "/app/e", "after")
	if b := next(t, h.ch, wait); b.Reset || b.Rev != rev {
		t.Fatalf("batch after resync = %+v, want rev %d", b, rev)
	}
	if got, want := h.w.Status().Resyncs, map[string]int64{watch.CauseInitial: 1, watch.CauseCompacted: 1}; !maps.Equal(got, want) {
		t.Errorf("Status().Resyncs = %v, want %v", got, want)
	}
}

func TestRestartResumesWithoutResync(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/app/a", "1")
	h := startWatcher(t, s, withPrefix(fast, "/app/"))
	nextReset(t, h)
	waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected })

	s.Restart()
	rev := put(t, c, "/app/a", "2")
	b := next(t, h.ch, wait)
	if b.Reset {
		t.Fatalf("got a Reset (cause %q) after a plain restart, want the put as a normal batch", b.Cause)
	}
	if got, want := content(b.Changes), map[string]string{"a": "2"}; b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("batch = rev %d %v, want rev %d %v", b.Rev, got, rev, want)
	}
}

func TestEtcdDownAtStart(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	rev := put(t, c, "/app/k", "v")
	port := s.Port()
	s.Stop()

	h := startWatcher(t, s, withPrefix(fast, "/app/"))
	line := waitLog(t, h.logs, "WARN", "etcd get /app/ failed:", "; retrying in ")
	t.Logf("logged: %s", line)
	if st := h.w.Status(); st.LastError == "" || st.Connected || st.Rev != 0 {
		t.Errorf("Status() while down = %+v, want LastError set, not connected, Rev 0", st)
	}

	s.StartOn(port)
	b := nextReset(t, h)
	if got, want := b.Cause, watch.CauseInitial; got != want {
		t.Errorf("Cause = %q, want %q", got, want)
	}
	if got, want := content(b.Changes), map[string]string{"k": "v"}; b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("batch = rev %d %v, want rev %d %v", b.Rev, got, rev, want)
	}
}

func TestCancelReturnsPromptly(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/app/k", "v")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h *harness)
	}{
		{"blocked sending", func(t *testing.T, h *harness) {
			waitStatus(t, h.w, "a successful Get", func(st watch.Status) bool { return !st.LastHeard.IsZero() })
		}},
		{"watching", func(t *testing.T, h *harness) {
			nextReset(t, h)
			waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected })
		}},
		{"watch blocked sending", func(t *testing.T, h *harness) {
			nextReset(t, h)
			before := waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected }).LastHeard
			put(t, c, "/app/k", "unread")
			waitStatus(t, h.w, "the event", func(st watch.Status) bool { return st.LastHeard.After(before) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startWatcher(t, s, withPrefix(fast, "/app/"))
			tc.setup(t, h)
			start := time.Now()
			if err := h.stop(); !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Run took %v to return after cancel", d)
			}
		})
	}
	for _, tc := range []struct {
		name     string
		endpoint string
		close    bool
	}{
		{"etcd unreachable", "http://127.0.0.1:1", false},
		{"client closed", s.Endpoint(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{tc.endpoint}, Logger: zapNop()})
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			t.Cleanup(func() { c.Close() })
			if tc.close {
				c.Close()
			}
			o := withPrefix(fast, "/app/")
			o.Client = c
			h := startWatcher(t, s, o)
			waitLog(t, h.logs, "etcd get /app/ failed", "retrying in")
			start := time.Now()
			if err := h.stop(); !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Run took %v to return after cancel", d)
			}
		})
	}
}

func TestDeniedReadIsLoggedWithHint(t *testing.T) {
	t.Parallel()
	// bcrypt at its default cost takes seconds under -race.
	s := etcdtest.Start(t, func(cfg *embed.Config) { cfg.BcryptCost = 4 })
	root := s.Client(t)
	ctx := ctxT(t)
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"add root", func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err }},
		{"grant root", func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err }},
		{"add reader", func() error { _, err := root.UserAdd(ctx, "reader", "pw"); return err }},
		{"add role", func() error { _, err := root.RoleAdd(ctx, "other"); return err }},
		{"grant other", func() error {
			_, err := root.RoleGrantPermission(ctx, "other", "/other/", clientv3.GetPrefixRangeEnd("/other/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"grant role", func() error { _, err := root.UserGrantRole(ctx, "reader", "other"); return err }},
		{"enable auth", func() error { _, err := root.AuthEnable(ctx); return err }},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	reader, err := clientv3.New(clientv3.Config{
		Endpoints: []string{s.Endpoint()}, Username: "reader", Password: "pw",
		DialTimeout: wait, Logger: zapNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { reader.Close() })
	o := withPrefix(fast, "/app/")
	o.Client = reader
	h := startWatcher(t, s, o)
	line := waitLog(t, h.logs, "etcd get /app/ failed", "permission denied", "hint=")
	if !strings.Contains(line, "read permission on the prefix") {
		t.Errorf("log line %q lacks the grant hint", line)
	}
	if st := h.w.Status(); !strings.Contains(st.LastError, "permission denied") {
		t.Errorf("Status().LastError = %q, want permission denied", st.LastError)
	}
}

// changeWhileAway stops s and serves it on another port, where the watcher
// cannot reach it; there change makes its changes and returns a revision,
// up to which the history is compacted away; then s serves on its own port
// again. It returns that revision.
func changeWhileAway(t *testing.T, s *etcdtest.Server, change func(other *clientv3.Client) int64) int64 {
	t.Helper()
	origPort := s.Port()
	s.Stop()
	s.StartOn(etcdtest.FreePort(t))
	other := s.Client(t)
	rev := change(other)
	if _, err := other.Compact(ctxT(t), rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	other.Close()
	s.Stop()
	s.StartOn(origPort)
	return rev
}

// TestCompactionAnswerResyncsAtOnce: etcd comes back from outages during
// which the history was compacted, one soon after the other, so that the
// watches between them see no event and live less than the 10 s that
// proves a watch healthy. A compaction answer still proves etcd serves the
// watch, so each resync waits at most MinBackoff; before, the delay doubled
// with each outage (here up to 320 ms by the fifth), which made dispenser
// come back later after each outage of a series.
func TestCompactionAnswerResyncsAtOnce(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	put(t, s.Client(t), "/app/a", "0")
	o := withPrefix(fast, "/app/")
	o.MaxBackoff = time.Minute
	h := startWatcher(t, s, o)
	nextReset(t, h)
	for i := range 5 {
		waitStatus(t, h.w, "a connected watch", func(st watch.Status) bool { return st.Connected })
		changeWhileAway(t, s, func(other *clientv3.Client) int64 {
			put(t, other, "/app/a", fmt.Sprint(i+1))
			return put(t, other, "/elsewhere", "x") // the compaction removes the put's revision
		})
		line := waitLog(t, h.logs, "lost continuity", watch.CauseCompacted)
		_, after, _ := strings.Cut(line, "resyncing in ")
		d, err := time.ParseDuration(strings.Fields(after)[0])
		if err != nil {
			t.Fatalf("outage %d: no delay in %q: %v", i, line, err)
		}
		if d > o.MinBackoff {
			t.Errorf("outage %d: resync after a compaction answer waits %v, want at most MinBackoff (%v)", i, d, o.MinBackoff)
		}
		if b := nextReset(t, h); content(b.Changes)["a"] != fmt.Sprint(i+1) {
			t.Fatalf("outage %d: Reset = %v, want a=%d", i, content(b.Changes), i+1)
		}
	}
}
