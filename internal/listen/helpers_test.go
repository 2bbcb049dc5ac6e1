package listen_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/leaktest"
	"github.com/dispenser-dev/dispenser/internal/listen"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Main(m)) }

// wait is the bound on every wait for an event in these tests.
const wait = 20 * time.Second

// server is a listen.Server running on loopback, with a client that
// trusts its certificate.
type server struct {
	*listen.Server
	client *http.Client
	url    string
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

// start runs a Server for opts (ListenAddress 127.0.0.1:0 unless set) until
// the test ends, and checks that Run then returns nil in time.
func start(t testing.TB, opts listen.Options) *server {
	t.Helper()
	if opts.ListenAddress == "" {
		opts.ListenAddress = "127.0.0.1:0"
	}
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := listen.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &server{Server: s, url: "https://" + s.Addr(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { srv.done <- s.Run(ctx) }()
	srv.client = clientFor(t, s.Certificate())
	t.Cleanup(func() {
		cancel()
		if err := srv.stopped(t); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	return srv
}

// stopped waits for Run to return and returns its error; it can be called
// more than once.
func (s *server) stopped(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(wait):
		t.Fatalf("Run did not return within %v of its context's end", wait)
		return nil
	}
}

// clientFor is an HTTPS client that trusts only cert.
func clientFor(t testing.TB, cert tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: wait}
}

// post sends body to path and returns the status code and response body.
func (s *server) post(t testing.TB, path string, body io.Reader) (int, string) {
	t.Helper()
	return s.do(t, http.MethodPost, path, body)
}

func (s *server) do(t testing.TB, method, path string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// recorder is a Pusher that records the pushes it gets and answers each
// with answer (a zero Result if nil).
type recorder struct {
	answer func(ctx context.Context, p listen.Push) (listen.Result, error)

	mu    sync.Mutex
	calls []listen.Push
}

func (r *recorder) Push(ctx context.Context, p listen.Push) (listen.Result, error) {
	r.mu.Lock()
	r.calls = append(r.calls, p)
	r.mu.Unlock()
	if r.answer == nil {
		return listen.Result{}, nil
	}
	return r.answer(ctx, p)
}

func (r *recorder) pushes() []listen.Push {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]listen.Push(nil), r.calls...)
}

// logBuffer collects log lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// contains reports whether a log line contains every one of parts.
func (l *logBuffer) contains(parts ...string) bool {
	for line := range strings.SplitSeq(l.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
