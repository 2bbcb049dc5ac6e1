package etcha

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLong bounds every wait of the run tests: generous, because CI is a
// slow shared 2-core machine; a passing test never waits it out.
const waitLong = 30 * time.Second

// logSink is a log writer that tests can wait on: every write wakes the
// waiters.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many log lines contain every one of subs, and a
// channel closed at the next write.
func (l *logSink) count(subs ...string) (int, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok && line != "" {
			n++
		}
	}
	return n, l.changed
}

// waitLines waits until n log lines contain every one of subs.
func (l *logSink) waitLines(t testing.TB, n int, subs ...string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		got, changed := l.count(subs...)
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("after %s: %d log line(s) with %q, want %d; log:\n%s", waitLong, got, subs, n, l.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is an App.Run in progress.
type running struct {
	addr string
	cert tls.Certificate
	log  *logSink
	out  *lockedBuffer
	stop func() error // cancels Run and returns its error
	done chan error   // Run's error, once it returned (then put back)
}

// startRun loads cfg into an App with the real clock, starts Run and
// waits for start-up (every source pulled and run). env is the App's
// process environment (ETCD_*).
func startRun(t testing.TB, cfg string, env ...string) *running {
	t.Helper()
	return startRunWith(t, cfg, nil, env...)
}

// startRunWith is startRun with RunOptions adjusted by adjust (if not nil).
func startRunWith(t testing.TB, cfg string, adjust func(*RunOptions), env ...string) *running {
	t.Helper()
	app, _ := newApp(t, cfg)
	r := &running{log: newLogSink(), out: &lockedBuffer{}}
	app.Now, app.Env, app.Stdout = nil, env, r.out
	app.Logger = slogTo(r.log)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	r.done = done
	o := RunOptions{Grace: 5 * time.Second, Ready: func(addr string, cert tls.Certificate) { r.cert = cert; ready <- addr }}
	if adjust != nil {
		adjust(&o)
	}
	go func() { done <- app.Run(ctx, o) }()
	var once sync.Once
	var stopErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
				done <- stopErr
			case <-time.After(waitLong):
				t.Fatalf("Run did not return within %s of its context ending; log:\n%s", waitLong, r.log.String())
			}
		})
		return stopErr
	}
	t.Cleanup(func() { r.stop() })
	select {
	case r.addr = <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("Run returned %v before start-up was done; log:\n%s", err, r.log.String())
	case <-time.After(waitLong):
		t.Fatalf("start-up not done within %s; log:\n%s", waitLong, r.log.String())
	}
	return r
}

// fileText returns the content of p, "" if it does not exist.
func fileText(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// timeNowMinus returns the current time less m minutes, in whole seconds.
func timeNowMinus(m int) time.Time {
	return time.Now().Add(-time.Duration(m) * time.Minute).Truncate(time.Second)
}
