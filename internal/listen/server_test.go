package listen_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
)

func TestRateLimit(t *testing.T) {
	rec := &recorder{}
	// 3 per hour: no token comes back while the test runs.
	s := start(t, listen.Options{Pusher: rec, RateLimitRate: "3/h"})
	if err := s.Handle("GET /extra", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "extra") })); err != nil {
		t.Fatal(err)
	}
	// Every endpoint draws from the same bucket: a push, an unknown path
	// and an added handler.
	for i, path := range []string{"/etcha/v1/push/web", "/nothing"} {
		if code, _ := s.post(t, path, strings.NewReader("jwt")); code == http.StatusTooManyRequests {
			t.Fatalf("request %d = 429 within the burst of 3", i+1)
		}
	}
	if code, body := s.do(t, http.MethodGet, "/extra", nil); code != http.StatusOK || body != "extra" {
		t.Fatalf("GET /extra = %d %q, want 200 extra", code, body)
	}
	for _, path := range []string{"/etcha/v1/push/web", "/nothing", "/extra"} {
		if code, _ := s.post(t, path, strings.NewReader("jwt")); code != http.StatusTooManyRequests {
			t.Errorf("POST %s after the burst = %d, want 429", path, code)
		}
	}
	if n := len(rec.pushes()); n != 1 {
		t.Errorf("Pusher got %d pushes, want 1 (the limited one must not reach it)", n)
	}
	if !s.logs.contains("rate limited", "remote=127.0.0.1:") {
		t.Errorf("log has no rate-limited request:\n%s", s.logs)
	}

	// Another client IP has its own bucket (Linux routes all of
	// 127.0.0.0/8 to loopback).
	other := clientFor(t, s.Certificate())
	other.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	resp, err := other.Get(s.url + "/extra")
	if err != nil {
		t.Skipf("cannot connect from 127.0.0.2: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /extra from 127.0.0.2 = %d, want 200", resp.StatusCode)
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want listen.Rate
		err  bool
	}{
		{"", listen.Rate{}, false},
		{"0", listen.Rate{}, false},
		{"0/s", listen.Rate{}, false},
		{"10/s", listen.Rate{Count: 10, Per: time.Second}, false},
		{" 600/m ", listen.Rate{Count: 600, Per: time.Minute}, false},
		{"1/h", listen.Rate{Count: 1, Per: time.Hour}, false},
		{"5/10s", listen.Rate{Count: 5, Per: 10 * time.Second}, false},
		{"10", listen.Rate{}, true},
		{"10-M", listen.Rate{}, true},
		{"x/s", listen.Rate{}, true},
		{"-1/s", listen.Rate{}, true},
		{"10/d", listen.Rate{}, true},
		{"10/0s", listen.Rate{}, true},
		{"10/-1s", listen.Rate{}, true},
	} {
		got, err := listen.ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "for example")) {
			t.Errorf("ParseRate(%q) error %q: want one line with an example", tc.in, err)
		}
	}
}

func TestHandle(t *testing.T) {
	s := start(t, listen.Options{Pusher: &recorder{}})
	if err := s.Handle("/hooks/deploy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" deploy")
	})); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if code, body := s.post(t, "/hooks/deploy", nil); code != http.StatusOK || body != "POST deploy" {
		t.Errorf("POST /hooks/deploy = %d %q, want 200 %q", code, body, "POST deploy")
	}
	for _, pattern := range []string{"/hooks/deploy", "/etcha/v1/push/{name...}", "GET /{a}{b}"} {
		err := s.Handle(pattern, http.NotFoundHandler())
		t.Logf("Handle(%q) = %v", pattern, err)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Handle(%q) = %v, want a one-line error", pattern, err)
		}
	}
}

// TestShutdownWaitsForPush cancels Run while a push runs: the listener
// closes at once, the push finishes with its context intact and gets its
// answer, and only then does Run return.
func TestShutdownWaitsForPush(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var seq, pushEnded atomic.Int64
	rec := &recorder{answer: func(ctx context.Context, p listen.Push) (listen.Result, error) {
		close(entered)
		<-release
		if err := ctx.Err(); err != nil {
			return listen.Result{}, err
		}
		pushEnded.Store(seq.Add(1))
		return listen.Result{Changed: []string{"slow"}}, nil
	}}
	s := start(t, listen.Options{Pusher: rec, ShutdownTimeout: wait})
	type answer struct {
		code int
		body string
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := s.client.Post(s.url+"/etcha/v1/push/web", "", strings.NewReader("jwt"))
		if err != nil {
			answered <- answer{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(b)}
	}()
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("the push did not reach the Pusher")
	}
	s.cancel()
	waitRefused(t, s.Addr())
	runEnded := make(chan int64, 1)
	go func() { s.stopped(t); runEnded <- seq.Add(1) }()
	close(release)
	select {
	case a := <-answered:
		if a.code != http.StatusOK || !strings.Contains(a.body, `"changed":["slow"]`) {
			t.Errorf("push in flight = %d %q, want 200 with changed [slow]", a.code, a.body)
		}
	case <-time.After(wait):
		t.Fatal("the push in flight got no answer")
	}
	select {
	case end := <-runEnded:
		if p := pushEnded.Load(); p == 0 || p > end {
			t.Errorf("Run returned before the push in flight ended")
		}
	case <-time.After(wait):
		t.Fatal("Run did not return")
	}
}

// TestShutdownGraceCancelsPush: a push that outlives ShutdownTimeout has its
// context cancelled, and Run returns once it did.
func TestShutdownGraceCancelsPush(t *testing.T) {
	entered := make(chan struct{})
	cause := make(chan error, 1)
	rec := &recorder{answer: func(ctx context.Context, p listen.Push) (listen.Result, error) {
		close(entered)
		<-ctx.Done()
		// Cleaning up takes a while (killing a run's processes): Run must
		// wait for it, not just for the connections to close.
		time.Sleep(300 * time.Millisecond)
		cause <- ctx.Err()
		return listen.Result{}, ctx.Err()
	}}
	s := start(t, listen.Options{Pusher: rec, ShutdownTimeout: 200 * time.Millisecond})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		if resp, err := s.client.Post(s.url+"/etcha/v1/push/web", "", strings.NewReader("jwt")); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("the push did not reach the Pusher")
	}
	s.cancel()
	if err := s.stopped(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	select {
	case err := <-cause:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("push context ended with %v, want context.Canceled", err)
		}
	default:
		t.Error("Run returned before the Pusher did")
	}
	if !s.logs.contains("grace period over") {
		t.Errorf("log does not say the grace period ended:\n%s", s.logs)
	}
	<-clientDone
}

// waitRefused waits until addr refuses TLS connections.
func waitRefused(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		conn.Close()
		time.Sleep(10 * time.Millisecond) // polling for the listener to close; bounded by deadline
	}
	t.Fatalf("%s still accepts connections %v after Run's context ended", addr, wait)
}

func TestNewErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		opts listen.Options
		want string
	}{
		{"address in use", listen.Options{ListenAddress: busy.Addr().String()}, "httpServer.listenAddress"},
		{"bad address", listen.Options{ListenAddress: "127.0.0.1:http-ish"}, "httpServer.listenAddress"},
		{"bad rate", listen.Options{ListenAddress: "127.0.0.1:0", RateLimitRate: "lots"}, "rateLimitRate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := listen.New(tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("New error %q: want one line naming %s", err, tc.want)
			}
		})
	}
}

func TestCloseWithoutRun(t *testing.T) {
	s, err := listen.New(listen.Options{ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
	// Run on a closed Server returns the error that stopped serving, at
	// once, though its context is not done.
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Run after Close = %v, want an error naming %s", err, addr)
		}
	case <-time.After(wait):
		t.Fatal("Run after Close did not return")
	}
}

// TestBodyTooLargeEveryEndpoint: a declared body over MaxBodyBytes is 413
// before any handler runs, on a path added with Handle (metrics) and on
// the shell stream, which read no body themselves.
func TestBodyTooLargeEveryEndpoint(t *testing.T) {
	var called atomic.Int32
	sh := newShells(t)
	s := start(t, listen.Options{Shells: sh})
	if err := s.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Add(1) })); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), listen.MaxBodyBytes+1)
	for _, path := range []string{"/metrics", listen.ShellPath + "web"} {
		req, _ := http.NewRequest(http.MethodGet, s.url+path, bytes.NewReader(big))
		req.Header.Set("Authorization", "Bearer good")
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("GET %s with %d bytes = %d, want 413", path, len(big), resp.StatusCode)
		}
	}
	if n := called.Load() + int32(sh.started()); n != 0 {
		t.Errorf("%d handlers or shells ran, want 0", n)
	}
	if !s.logs.contains("request refused: body too large") {
		t.Errorf("refusal not logged:\n%s", s.logs)
	}
}
