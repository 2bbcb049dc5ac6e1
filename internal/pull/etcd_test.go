package pull_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/pull"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

func put(t testing.TB, c *clientv3.Client, key, value string) int64 {
	t.Helper()
	resp, err := c.Put(ctxT(t), key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func del(t testing.TB, c *clientv3.Client, key string) int64 {
	t.Helper()
	resp, err := c.Delete(ctxT(t), key)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

func TestFetchEtcd(t *testing.T) {
	t.Parallel()
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/p/app", "jwt-1")
	put(t, c, "/p/big", "0123456789A")
	f := pull.New(pull.Options{Etcd: c, MaxSize: 10})
	if got, err := f.Fetch(ctxT(t), mustParse(t, "etcd:///p/app")); err != nil || got != "jwt-1" {
		t.Fatalf("Fetch(etcd:///p/app) = %q, %v; want jwt-1", got, err)
	}
	_, err := f.Fetch(ctxT(t), mustParse(t, "etcd:///p/ap"))
	wantErr(t, "Fetch of a missing key", err, "etcd key /p/ap does not exist")
	_, err = f.Fetch(ctxT(t), mustParse(t, "etcd:///p/big"))
	wantErr(t, "Fetch of an 11-byte value with MaxSize 10", err, "/p/big", "larger than 10 bytes")
	_, err = pull.New(pull.Options{}).Fetch(ctxT(t), mustParse(t, "etcd:///p/app"))
	wantErr(t, "Fetch of an etcd path without a client", err, "etcd is not configured", "ETCD_ENDPOINTS")
}

func TestWatchNeedsEtcdPath(t *testing.T) {
	on := func(pull.Event) { t.Error("on called") }
	err := pull.New(pull.Options{}).Watch(ctxT(t), mustParse(t, "etcd:///p/app"), on)
	wantErr(t, "Watch without a client", err, "etcd is not configured")
	err = pull.New(pull.Options{}).Watch(ctxT(t), mustParse(t, "/p/app.jwt"), on)
	wantErr(t, "Watch of a file", err, "only etcd:/// paths")
}

// watcher is one running Watch whose events arrive on ch.
type watcher struct {
	ch   chan pull.Event
	logs chan string
}

// startWatch runs Watch on key until the test ends, with fast retries.
func startWatch(t testing.TB, c *clientv3.Client, key string) *watcher {
	t.Helper()
	w := &watcher{ch: make(chan pull.Event, 100), logs: make(chan string, 1000)}
	f := pull.New(pull.Options{
		Etcd: c, EtcdTimeout: 2 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(chanWriter(w.logs), nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Watch(ctx, mustParse(t, "etcd://"+key), func(ev pull.Event) { w.ch <- ev }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(wait):
			t.Errorf("Watch did not return within %v of its context's end", wait)
		}
	})
	return w
}

// chanWriter sends each log line to a channel, dropping lines it is full.
type chanWriter chan string

func (c chanWriter) Write(b []byte) (int, error) {
	select {
	case c <- string(b):
	default:
	}
	return len(b), nil
}

// next returns the next event, failing the test after wait.
func (w *watcher) next(t testing.TB) pull.Event {
	t.Helper()
	select {
	case ev := <-w.ch:
		return ev
	case <-time.After(wait):
		t.Fatalf("no event within %v", wait)
		return pull.Event{}
	}
}

// want fails unless ev is a put of value at rev (rev 0: any) with the given
// cause kind.
func wantEvent(t testing.TB, ev pull.Event, value string, deleted bool, rev int64, cause string) {
	t.Helper()
	if ev.Value != value || ev.Deleted != deleted || (rev != 0 && ev.Rev != rev) || watch.CauseKind(ev.Cause) != cause || ev.Err != nil {
		t.Fatalf("event = %+v, want value %q deleted %v rev %d cause %q", ev, value, deleted, rev, cause)
	}
}

func TestWatchDeliversPutsAndDeletes(t *testing.T) {
	t.Parallel()
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/p/app", "jwt-1")
	rev := put(t, c, "/p/app2", "other")
	w := startWatch(t, c, "/p/app")
	wantEvent(t, w.next(t), "jwt-1", false, rev, watch.CauseInitial) // the read's revision

	// Keys that start like the watched one are not reported: the next
	// event is the watched key's own put.
	put(t, c, "/p/app2", "other-2")
	put(t, c, "/p/app/sub", "x")
	rev = put(t, c, "/p/app", "jwt-2")
	wantEvent(t, w.next(t), "jwt-2", false, rev, "")

	rev = put(t, c, "/p/app", "jwt-2") // the same value again is still a put
	wantEvent(t, w.next(t), "jwt-2", false, rev, "")

	rev = del(t, c, "/p/app")
	wantEvent(t, w.next(t), "", true, rev, "")
	del(t, c, "/p/app2")
	rev = put(t, c, "/p/app", "jwt-3")
	wantEvent(t, w.next(t), "jwt-3", false, rev, "")
}

func TestWatchAbsentKeyAtStart(t *testing.T) {
	t.Parallel()
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/p/app2", "other")
	w := startWatch(t, c, "/p/app")
	wantEvent(t, w.next(t), "", true, 0, watch.CauseInitial)
	rev := put(t, c, "/p/app", "jwt-1")
	wantEvent(t, w.next(t), "jwt-1", false, rev, "")
}

func TestWatchSurvivesRestart(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/p/app", "jwt-1")
	w := startWatch(t, c, "/p/app")
	wantEvent(t, w.next(t), "jwt-1", false, 0, watch.CauseInitial)

	s.Restart()
	rev := put(t, c, "/p/app", "jwt-2")
	ev := w.next(t)
	// Usually the client resumes the watch and the put arrives as such; if
	// the watch failed meanwhile, the key is read again, which finds it too.
	if ev.Cause != "" {
		t.Logf("the watch resynced after the restart: %s", ev.Cause)
	}
	wantEvent(t, ev, "jwt-2", false, rev, watch.CauseKind(ev.Cause))
}

func TestWatchCompactionWhileStopped(t *testing.T) {
	t.Parallel() // etcd takes seconds to stop with a watch open
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/p/app", "jwt-1")
	w := startWatch(t, c, "/p/app")
	wantEvent(t, w.next(t), "jwt-1", false, 0, watch.CauseInitial)

	// While the watcher cannot reach it, etcd serves elsewhere, changes
	// the key and compacts away the revisions the watch would resume from.
	origPort := s.Port()
	s.Stop()
	s.StartOn(etcdtest.FreePort(t))
	other := s.Client(t)
	rev := put(t, other, "/p/app", "jwt-2")
	put(t, other, "/p/app2", "other")
	if _, err := other.Compact(ctxT(t), rev+1, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	other.Close()
	s.Stop()
	s.StartOn(origPort)

	// The put happened in the compacted history: it is reported from the
	// read that follows the compaction, with the revision of that read.
	wantEvent(t, w.next(t), "jwt-2", false, rev+1, watch.CauseCompacted)

	// And later puts arrive again as they happen.
	rev = put(t, c, "/p/app", "jwt-3")
	wantEvent(t, w.next(t), "jwt-3", false, rev, "")
	waitLog(t, w.logs, "lost continuity", "compacted")
}

// waitLog waits for a log line containing all of parts.
func waitLog(t testing.TB, logs <-chan string, parts ...string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case line := <-logs:
			if containsAll(line, parts) {
				return
			}
		case <-deadline:
			t.Fatalf("no log line containing %q within %v", parts, wait)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
