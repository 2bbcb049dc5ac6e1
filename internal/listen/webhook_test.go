package listen_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
)

// hooks is a Webhooker that records the webhooks it gets and answers each
// with answer.
type hooks struct {
	answer func(ctx context.Context, w listen.Webhook) (listen.WebhookReply, error)

	mu    sync.Mutex
	calls []listen.Webhook
}

func (h *hooks) Webhook(ctx context.Context, w listen.Webhook) (listen.WebhookReply, error) {
	h.mu.Lock()
	h.calls = append(h.calls, w)
	h.mu.Unlock()
	return h.answer(ctx, w)
}

func (h *hooks) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func TestWebhook(t *testing.T) {
	h := &hooks{answer: func(_ context.Context, w listen.Webhook) (listen.WebhookReply, error) {
		if w.Method == http.MethodGet {
			return listen.WebhookReply{}, nil // no source answered
		}
		return listen.WebhookReply{Found: true, Body: "got " + string(w.Body), ContentType: "application/json"}, nil
	}}
	s := start(t, listen.Options{Webhooks: h, WebhookPaths: []string{"/hook", "/plain/"}, Pusher: &recorder{}})
	req, _ := http.NewRequest(http.MethodPut, s.url+"/hook?a=1&b=2", strings.NewReader("payload"))
	req.Header.Set("X-Thing", "yes")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "got payload" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("PUT /hook = %d %q %q, want 200 %q application/json", resp.StatusCode, body, resp.Header.Get("Content-Type"), "got payload")
	}
	got := h.calls[0]
	if got.Method != "PUT" || got.Path != "/hook" || got.RawQuery != "a=1&b=2" || got.Header.Get("X-Thing") != "yes" || got.RemoteAddr == "" {
		t.Errorf("Webhooker got %+v", got)
	}
	// No source answered: 404.
	if code, _ := s.do(t, http.MethodGet, "/hook", nil); code != http.StatusNotFound {
		t.Errorf("GET /hook with no answer = %d, want 404", code)
	}
	// Exact paths only; unknown paths never reach the Webhooker.
	before := h.count()
	for _, p := range []string{"/hook/", "/hook/x", "/plain/x", "/nothing", "/etcha/v1/other"} {
		if code, _ := s.post(t, p, strings.NewReader("x")); code != http.StatusNotFound {
			t.Errorf("POST %s = %d, want 404", p, code)
		}
	}
	if code, _ := s.post(t, "/plain/", strings.NewReader("x")); code != http.StatusOK {
		t.Errorf("POST /plain/ = %d, want 200", code)
	}
	if n := h.count() - before; n != 1 {
		t.Errorf("Webhooker called %d times for unknown paths and /plain/, want 1", n)
	}
	// Wrong method on push: 405 (push checks its method itself).
	if code, _ := s.do(t, http.MethodGet, "/etcha/v1/push/web", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET push = %d, want 405", code)
	}
}

func TestWebhookBodyTooLarge(t *testing.T) {
	h := &hooks{answer: func(context.Context, listen.Webhook) (listen.WebhookReply, error) {
		return listen.WebhookReply{Found: true, Body: "ran"}, nil
	}}
	s := start(t, listen.Options{Webhooks: h, WebhookPaths: []string{"/hook"}})
	big := bytes.Repeat([]byte("x"), listen.MaxBodyBytes+1)
	// With a Content-Length, and chunked (no length known in advance).
	for _, body := range []io.Reader{bytes.NewReader(big), io.MultiReader(bytes.NewReader(big))} {
		if code, _ := s.post(t, "/hook", body); code != http.StatusRequestEntityTooLarge {
			t.Errorf("POST /hook with %d bytes = %d, want 413", len(big), code)
		}
	}
	if n := h.count(); n != 0 {
		t.Fatalf("Webhooker ran %d times for oversized bodies, want 0", n)
	}
	if code, body := s.post(t, "/hook", bytes.NewReader(big[:listen.MaxBodyBytes])); code != 200 || body != "ran" {
		t.Errorf("POST /hook with exactly 4 MiB = %d %q, want 200 ran", code, body)
	}
}

func TestWebhookTimeout(t *testing.T) {
	h := &hooks{answer: func(ctx context.Context, _ listen.Webhook) (listen.WebhookReply, error) {
		<-ctx.Done()
		return listen.WebhookReply{}, ctx.Err()
	}}
	s := start(t, listen.Options{Webhooks: h, WebhookPaths: []string{"/slow"}, TimeoutWebhook: 200 * time.Millisecond})
	if code, _ := s.do(t, http.MethodGet, "/slow", nil); code != http.StatusGatewayTimeout {
		t.Fatalf("GET /slow = %d, want 504", code)
	}
	if !s.logs.contains("webhook timed out") {
		t.Errorf("no timeout logged:\n%s", s.logs)
	}
}

func TestCheckWebhookPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/hook", true}, {"/a/b/", true}, {"/", true},
		{"hook", false}, {"/a//b", false}, {"/a/../b", false}, {"/a/.", false},
		{"/etcha/v1/push/x", false}, {"/etcha/v1/", false}, {"", false},
	} {
		err := listen.CheckWebhookPath(tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("CheckWebhookPath(%q) = %v, want ok %v", tc.path, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckWebhookPath(%q): error %q is not one line", tc.path, err)
		}
	}
	if _, err := listen.New(listen.Options{ListenAddress: "127.0.0.1:0", WebhookPaths: []string{"/etcha/v1/push/web"}}); err == nil {
		t.Error("New accepted a webhook path under /etcha/v1/")
	}
}

// TestRetryAfter exhausts the bucket with parallel clients on every
// endpoint: exactly the burst gets through, every other request gets 429
// with a Retry-After of whole seconds, and nothing runs beyond the burst.
func TestRetryAfter(t *testing.T) {
	h := &hooks{answer: func(context.Context, listen.Webhook) (listen.WebhookReply, error) {
		return listen.WebhookReply{Found: true, Body: "ok"}, nil
	}}
	rec := &recorder{}
	sh := newShells(t)
	s := start(t, listen.Options{Webhooks: h, WebhookPaths: []string{"/hook"}, Pusher: rec, Shells: sh, RateLimitRate: "4/h"})
	if err := s.Handle("/etcha/v1/system/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "m") })); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/hook", "/etcha/v1/push/web", "/etcha/v1/shell/web?session=x", "/etcha/v1/system/metrics"}
	const clients = 24
	codes := make([]int, clients)
	retry := make([]string, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			method := http.MethodPost
			if i%4 == 3 {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, s.url+paths[i%4], strings.NewReader("body"))
			req.Header.Set("Authorization", "Bearer bad")
			resp, err := s.client.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i], retry[i] = resp.StatusCode, resp.Header.Get("Retry-After")
		})
	}
	wg.Wait()
	limited := 0
	for i, c := range codes {
		if c != http.StatusTooManyRequests {
			continue
		}
		limited++
		n, err := strconv.Atoi(retry[i])
		// 4 per hour: the next token is 15 minutes away.
		if err != nil || n < 1 || n > 900 {
			t.Errorf("request %d: 429 with Retry-After %q, want whole seconds in [1, 900]", i, retry[i])
		}
	}
	if limited != clients-4 {
		t.Errorf("%d of %d requests limited, want %d (burst 4); codes %v", limited, clients, clients-4, codes)
	}
	if n := h.count() + len(rec.pushes()) + sh.started(); n > 4 {
		t.Errorf("%d requests reached a handler's work, want at most 4", n)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	s := start(t, listen.Options{RateLimitRate: "1/2s"})
	s.do(t, http.MethodGet, "/x", nil)
	resp, err := s.client.Get(s.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || (resp.Header.Get("Retry-After") != "2" && resp.Header.Get("Retry-After") != "1") {
		t.Errorf("second request = %d Retry-After %q, want 429 and 1 or 2 seconds", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestSlowClient sends half a header, then a whole header with half a
// body, over raw TLS connections: the server drops both within the read
// timeout, runs nothing, and still answers a good request.
func TestSlowClient(t *testing.T) {
	h := &hooks{answer: func(context.Context, listen.Webhook) (listen.WebhookReply, error) {
		return listen.WebhookReply{Found: true, Body: "ran"}, nil
	}}
	rec := &recorder{}
	sh := newShells(t)
	s := start(t, listen.Options{Webhooks: h, WebhookPaths: []string{"/hook"}, Pusher: rec, Shells: sh, ReadTimeout: 300 * time.Millisecond})
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate().Leaf)
	for _, tc := range []struct{ name, send string }{
		{"half a header", "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Le"},
		{"half a webhook body", "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"half a push body", "POST /etcha/v1/push/web HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		// Answered without reading the body: net/http would wait for
		// the rest of it.
		{"half a body to an unknown path", "POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"half a body to a refused shell POST", "POST /etcha/v1/shell/web?session=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"half a body to a shell GET", "GET /etcha/v1/shell/web HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nContent-Length: 100\r\n\r\n0123456789"},
	} {
		conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := io.WriteString(conn, tc.send); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		got, err := io.ReadAll(conn) // until the server closes
		conn.Close()
		if err != nil {
			t.Errorf("%s: the server did not close the connection: %v", tc.name, err)
		}
		if d := time.Since(began); d > wait/2 {
			t.Errorf("%s: closed after %v", tc.name, d)
		}
		if strings.Contains(string(got), " 200 ") {
			t.Errorf("%s: answered %q", tc.name, got)
		}
	}
	if n := h.count() + len(rec.pushes()) + sh.started(); n != 0 {
		t.Fatalf("%d slow requests ran, want 0", n)
	}
	if code, body := s.post(t, "/hook", strings.NewReader("x")); code != 200 || body != "ran" {
		t.Errorf("good request after the slow ones = %d %q", code, body)
	}
}
