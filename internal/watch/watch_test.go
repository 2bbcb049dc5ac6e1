package watch_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

// wait is the generous bound for anything a test waits for; CI is a slow,
// shared 2-core machine.
const wait = 30 * time.Second

// TestMain fails the run if goroutines of this package, the etcd client or
// gRPC outlive the tests, and removes the etcd binary etcdproc built.
func TestMain(m *testing.M) {
	code := leaktest.Main(m)
	etcdproc.RemoveBuilds()
	os.Exit(code)
}

// harness is one running Watcher.
type harness struct {
	w    *watch.Watcher
	ch   chan watch.Batch
	logs chan string
	stop func() error // cancels Run and returns its error
}

// startWatcher runs a Watcher with opts (Client and Logger are filled in if
// nil) until the test ends or stop is called.
func startWatcher(t testing.TB, s *etcdtest.Server, opts watch.Options) *harness {
	t.Helper()
	if opts.Client == nil {
		opts.Client = s.Client(t)
	}
	sink := &logSink{ch: make(chan string, 1000)}
	opts.Logger = slog.New(sink)
	h := &harness{w: watch.New(opts), ch: make(chan watch.Batch), logs: sink.ch}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx, h.ch) }()
	var err error
	stopped := false
	h.stop = func() error {
		t.Helper()
		if stopped {
			return err
		}
		stopped = true
		cancel()
		select {
		case err = <-done:
		case <-time.After(wait):
			t.Fatalf("Run did not return within %v after cancel", wait)
		}
		return err
	}
	t.Cleanup(func() { h.stop() })
	return h
}

// next returns the next batch, failing the test after timeout.
func next(t testing.TB, ch <-chan watch.Batch, timeout time.Duration) watch.Batch {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(timeout):
		t.Fatalf("no batch within %v", timeout)
		return watch.Batch{}
	}
}

// nextReset returns the next batch and fails unless it is a Reset.
func nextReset(t testing.TB, h *harness) watch.Batch {
	t.Helper()
	b := next(t, h.ch, wait)
	if !b.Reset {
		t.Fatalf("batch at rev %d is not a Reset: %+v", b.Rev, b)
	}
	return b
}

// content turns changes into key → value, "<deleted>" for deletes.
func content(cs []watch.Change) map[string]string {
	m := make(map[string]string, len(cs))
	for _, c := range cs {
		if c.Delete {
			m[c.Key] = "<deleted>"
		} else {
			m[c.Key] = string(c.Value)
		}
	}
	return m
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func put(t testing.TB, c *clientv3.Client, key, val string) int64 {
	t.Helper()
	resp, err := c.Put(ctxT(t), key, val)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return resp.Header.Revision
}

func txn(t testing.TB, c *clientv3.Client, ops ...clientv3.Op) int64 {
	t.Helper()
	resp, err := c.Txn(ctxT(t)).Then(ops...).Commit()
	if err != nil {
		t.Fatalf("txn: %v", err)
	}
	return resp.Header.Revision
}

func TestInitialSnapshotIsOneResetAtOneRevision(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	want := map[string]string{
		"with space":          "s p a c e",
		"ünïcødé/ключ/鍵":      "ü",
		"dir/sub/file.pem":    "-----BEGIN-----",
		"trailing-slash/":     "t",
		"tab\tand\nnewline":   "x",
		"emoji-🔑":             "🔑",
		"zzz-last-after-utf8": "z",
	}
	for i := len(want); i < 50; i++ {
		want[fmt.Sprintf("k%03d", i)] = fmt.Sprintf("v%d", i)
	}
	var rev int64
	for k, v := range want {
		rev = put(t, c, "/app/"+k, v)
	}
	put(t, c, "/apple", "outside")
	rev = put(t, c, "/other/x", "outside") // the snapshot's revision includes it

	h := startWatcher(t, s, watch.Options{Prefix: "/app/", PageSize: 7})
	b := nextReset(t, h)
	if got, want := b.Cause, watch.CauseInitial; got != want {
		t.Errorf("Cause = %q, want %q", got, want)
	}
	if got, want := b.Rev, rev; got != want {
		t.Errorf("Rev = %d, want %d", got, want)
	}
	if got := content(b.Changes); !maps.Equal(got, want) {
		t.Errorf("content = %v\nwant %v", got, want)
	}
	if !slices.IsSortedFunc(b.Changes, func(a, b watch.Change) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("Reset changes are not sorted by key")
	}
	// Status is updated just after the send, so wait for it.
	st := waitStatus(t, h.w, "the Reset", func(st watch.Status) bool { return st.Rev != 0 })
	if got, want := st.Rev, rev; got != want {
		t.Errorf("Status().Rev = %d, want %d", got, want)
	}
	if got, want := st.Resyncs, map[string]int64{watch.CauseInitial: 1}; !maps.Equal(got, want) {
		t.Errorf("Status().Resyncs = %v, want %v", got, want)
	}
}

func TestSnapshotPagesAtOneRevision(t *testing.T) {
	// Writes racing the paged read must not leak into the snapshot: every
	// key's value must be the one it had at the snapshot's revision.
	s := etcdtest.Start(t)
	c := s.Client(t)
	for i := range 50 {
		put(t, c, fmt.Sprintf("/p/%02d", i), "old")
	}
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ctx.Err() == nil && i < 10000; i++ {
			c.Put(ctx, fmt.Sprintf("/p/%02d", i%50), fmt.Sprintf("new%d", i))
		}
	}()
	t.Cleanup(func() { cancel(); <-writerDone })

	h := startWatcher(t, s, watch.Options{Prefix: "/p/", PageSize: 3})
	b := nextReset(t, h)
	cancel()
	<-writerDone
	resp, err := c.Get(ctxT(t), "/p/", clientv3.WithPrefix(), clientv3.WithRev(b.Rev))
	if err != nil {
		t.Fatalf("get at rev %d: %v", b.Rev, err)
	}
	want := map[string]string{}
	for _, kv := range resp.Kvs {
		want[strings.TrimPrefix(string(kv.Key), "/p/")] = string(kv.Value)
	}
	if got := content(b.Changes); !maps.Equal(got, want) {
		t.Errorf("snapshot differs from the content at its revision %d:\n got %v\nwant %v", b.Rev, got, want)
	}
}

func TestEmptyPrefixMirrorsEverything(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "a", "1")
	rev := put(t, c, "/b/c", "2")
	h := startWatcher(t, s, watch.Options{PageSize: 1})
	b := nextReset(t, h)
	if got, want := content(b.Changes), map[string]string{"a": "1", "/b/c": "2"}; !maps.Equal(got, want) {
		t.Errorf("content = %v, want %v", got, want)
	}
	if got, want := b.Rev, rev; got != want {
		t.Errorf("Rev = %d, want %d", got, want)
	}
}

func TestOneBatchPerRevision(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	for i := range 5 {
		put(t, c, fmt.Sprintf("/app/old%d", i), "x")
	}
	h := startWatcher(t, s, watch.Options{Prefix: "/app/"})
	// The snapshot's revision is the put of old4; the watch must not
	// repeat it, so the next batch is the txn below.
	nextReset(t, h)

	t.Run("txn of 50 puts", func(t *testing.T) {
		var ops []clientv3.Op
		want := map[string]string{}
		for i := range 50 {
			k := fmt.Sprintf("t%02d", i)
			ops = append(ops, clientv3.OpPut("/app/"+k, "v"+k))
			want[k] = "v" + k
		}
		rev := txn(t, c, ops...)
		b := next(t, h.ch, wait)
		if b.Reset || b.Rev != rev || b.Cause != "" {
			t.Fatalf("batch = {Rev:%d Reset:%v Cause:%q}, want {Rev:%d Reset:false Cause:\"\"}", b.Rev, b.Reset, b.Cause, rev)
		}
		if got := content(b.Changes); !maps.Equal(got, want) {
			t.Errorf("content = %v\nwant %v", got, want)
		}
	})
	t.Run("puts and deletes in one txn", func(t *testing.T) {
		rev := txn(t, c,
			clientv3.OpPut("/app/new", "n"),
			clientv3.OpDelete("/app/old0"),
			clientv3.OpPut("/app/old1", "changed"),
			clientv3.OpDelete("/app/old2", clientv3.WithRange("/app/old5")),
			clientv3.OpPut("/outside", "o"),
		)
		b := next(t, h.ch, wait)
		if got, want := b.Rev, rev; got != want {
			t.Fatalf("Rev = %d, want %d", got, want)
		}
		want := map[string]string{"new": "n", "old0": "<deleted>", "old1": "changed",
			"old2": "<deleted>", "old3": "<deleted>", "old4": "<deleted>"}
		if got := content(b.Changes); !maps.Equal(got, want) {
			t.Errorf("content = %v\nwant %v", got, want)
		}
	})
	t.Run("successive revisions in order", func(t *testing.T) {
		var revs []int64
		for i := range 5 {
			revs = append(revs, put(t, c, "/app/seq", fmt.Sprint(i)))
		}
		for i, rev := range revs {
			b := next(t, h.ch, wait)
			if b.Reset || b.Rev != rev || len(b.Changes) != 1 || string(b.Changes[0].Value) != fmt.Sprint(i) {
				t.Fatalf("batch %d = %+v, want one change seq=%d at rev %d", i, b, i, rev)
			}
		}
	})
	if got, want := h.w.Status().Resyncs, map[string]int64{watch.CauseInitial: 1}; !maps.Equal(got, want) {
		t.Errorf("Status().Resyncs = %v, want %v", got, want)
	}
}

func TestKeysOutsideThePrefixAreIgnored(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	put(t, c, "/apple", "before")
	h := startWatcher(t, s, watch.Options{Prefix: "/app/"})
	if b := nextReset(t, h); len(b.Changes) != 0 {
		t.Fatalf("initial content = %v, want empty", content(b.Changes))
	}
	put(t, c, "/apple", "after")
	put(t, c, "/app", "no slash")
	put(t, c, "/ap", "shorter")
	c.Delete(ctxT(t), "/apple")
	rev := put(t, c, "/app/inside", "yes")
	b := next(t, h.ch, wait)
	if got, want := content(b.Changes), map[string]string{"inside": "yes"}; b.Rev != rev || !maps.Equal(got, want) {
		t.Fatalf("batch = rev %d %v, want rev %d %v", b.Rev, got, rev, want)
	}
}

func TestCauseKind(t *testing.T) {
	for _, tc := range []struct{ cause, want string }{
		{"initial", "initial"},
		{"compacted: etcd compacted up to revision 9, the watch was at 3", "compacted"},
		{"watch-error: rpc error: code = X desc = a: b", "watch-error"},
		{"", ""},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := watch.CauseKind(tc.cause); got != tc.want {
				t.Fatalf("CauseKind(%q) = %q, want %q", tc.cause, got, tc.want)
			}
		})
	}
}

// logSink is a slog.Handler that forwards each record, as one line of
// message and attributes, to a channel (dropping lines when it is full).
type logSink struct {
	ch    chan string
	attrs []slog.Attr
}

func (h *logSink) Enabled(context.Context, slog.Level) bool { return true }

func (h *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	select {
	case h.ch <- b.String():
	default:
	}
	return nil
}

func (h *logSink) WithAttrs(as []slog.Attr) slog.Handler {
	return &logSink{ch: h.ch, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logSink) WithGroup(string) slog.Handler { return h }

// waitLog waits for a log line containing all of substrs.
func waitLog(t testing.TB, logs <-chan string, substrs ...string) string {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case l := <-logs:
			ok := true
			for _, s := range substrs {
				ok = ok && strings.Contains(l, s)
			}
			if ok {
				return l
			}
		case <-deadline:
			t.Fatalf("no log line containing %q within %v", substrs, wait)
			return ""
		}
	}
}

// waitStatus polls Status until cond holds, failing after the deadline.
func waitStatus(t testing.TB, w *watch.Watcher, what string, cond func(watch.Status) bool) watch.Status {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(wait)
	for {
		if st := w.Status(); cond(st) {
			return st
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("status never showed %s within %v; last: %+v", what, wait, w.Status())
		}
	}
}
