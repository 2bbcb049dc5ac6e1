package listen_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
)

func TestPushAnswersResultJSON(t *testing.T) {
	want := listen.Result{Changed: []string{"a", "b"}, Removed: []string{"c"}, Err: "b: exit status 1", Exit: true, Output: "hi\n"}
	rec := &recorder{answer: func(_ context.Context, p listen.Push) (listen.Result, error) {
		if p.Source == "empty" {
			return listen.Result{}, nil
		}
		return want, nil
	}}
	s := start(t, listen.Options{Pusher: rec})

	code, body := s.post(t, "/etcha/v1/push/web", strings.NewReader("  aaa.bbb.ccc\n"))
	if code != http.StatusOK {
		t.Fatalf("push = %d %q, want 200", code, body)
	}
	var got listen.Result
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Result = %+v, want %+v", got, want)
	}
	calls := rec.pushes()
	if len(calls) != 1 {
		t.Fatalf("Pusher got %d pushes, want 1", len(calls))
	}
	p := calls[0]
	if p.Source != "web" || p.JWT != "aaa.bbb.ccc" || p.Check || p.ParentIDs != nil {
		t.Errorf("Push = %+v, want source web, JWT aaa.bbb.ccc (trimmed), no check, no parents", p)
	}
	if host, _, err := net.SplitHostPort(p.RemoteAddr); err != nil || host != "127.0.0.1" {
		t.Errorf("Push.RemoteAddr = %q, want 127.0.0.1:<port>", p.RemoteAddr)
	}

	// An empty Result still has changed and removed as lists, and exit.
	code, body = s.post(t, "/etcha/v1/push/empty", strings.NewReader("x"))
	if want := `{"changed":[],"removed":[],"exit":false}` + "\n"; code != http.StatusOK || body != want {
		t.Errorf("empty push = %d %q, want 200 %q", code, body, want)
	}
	// A source name may contain slashes (dispenser's pattern keys).
	if code, _ := s.post(t, "/etcha/v1/push/app/web", strings.NewReader("x")); code != http.StatusOK {
		t.Errorf("push to app/web = %d, want 200", code)
	}
	if calls := rec.pushes(); len(calls) != 3 || calls[2].Source != "app/web" {
		t.Errorf("last push = %+v, want source app/web", calls[len(calls)-1])
	}
}

func TestPushQuery(t *testing.T) {
	rec := &recorder{}
	s := start(t, listen.Options{Pusher: rec})
	for _, tc := range []struct {
		query   string
		code    int
		check   bool
		parents []string
	}{
		{"", 200, false, nil},
		{"?check=true", 200, true, nil},
		{"?check=1", 200, true, nil},
		{"?check=false", 200, false, nil},
		{"?parent=a", 200, false, []string{"a"}},
		{"?parent=b&check=true&parent=a&parent=", 200, true, []string{"b", "a"}},
		{"?parent=web%20servers", 200, false, []string{"web servers"}},
		{"?check=yes", 400, false, nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			before := len(rec.pushes())
			code, body := s.post(t, "/etcha/v1/push/web"+tc.query, strings.NewReader("jwt"))
			if code != tc.code {
				t.Fatalf("push = %d %q, want %d", code, body, tc.code)
			}
			calls := rec.pushes()
			if tc.code != 200 {
				if len(calls) != before {
					t.Fatalf("Pusher got a push for a bad query: %+v", calls[len(calls)-1])
				}
				return
			}
			if len(calls) != before+1 {
				t.Fatalf("Pusher got %d pushes, want 1", len(calls)-before)
			}
			p := calls[len(calls)-1]
			if p.Check != tc.check || !reflect.DeepEqual(p.ParentIDs, tc.parents) {
				t.Errorf("Push = check %v parents %q, want check %v parents %q", p.Check, p.ParentIDs, tc.check, tc.parents)
			}
		})
	}
}

func TestPushNotFound(t *testing.T) {
	rec := &recorder{answer: func(_ context.Context, p listen.Push) (listen.Result, error) {
		switch p.Source {
		case "web":
			return listen.Result{Changed: []string{"x"}}, nil
		case "closed":
			return listen.Result{}, fmt.Errorf("source closed does not allowPush: %w", listen.ErrNotFound)
		case "forged":
			return listen.Result{}, fmt.Errorf("source forged: JWT signature invalid: %w", listen.ErrNotFound)
		}
		return listen.Result{}, fmt.Errorf("no source %q: %w", p.Source, listen.ErrNotFound)
	}}
	s := start(t, listen.Options{Pusher: rec})
	for _, tc := range []struct{ source, log string }{
		{"nope", `no source \"nope\"`},
		{"closed", "does not allowPush"},
		{"forged", "JWT signature invalid"},
	} {
		code, body := s.post(t, "/etcha/v1/push/"+tc.source, strings.NewReader("jwt"))
		if code != http.StatusNotFound {
			t.Errorf("push to %s = %d %q, want 404", tc.source, code, body)
		}
		if strings.Contains(body, tc.log) {
			t.Errorf("404 body %q tells the client the reason %q", body, tc.log)
		}
		if !s.logs.contains("push refused", "source="+tc.source, tc.log) {
			t.Errorf("log has no refusal of %s with %q:\n%s", tc.source, tc.log, s.logs)
		}
	}
	if code, _ := s.post(t, "/etcha/v1/push/web", strings.NewReader("jwt")); code != http.StatusOK {
		t.Errorf("push to web = %d, want 200 (the Pusher's answer)", code)
	}
	// Paths that are not a push never reach the Pusher.
	n := len(rec.pushes())
	for _, path := range []string{"/", "/etcha/v1/push", "/etcha/v1/push/", "/etcha/v1/pushweb", "/etcha/v2/push/web"} {
		if code, body := s.post(t, path, strings.NewReader("jwt")); code != http.StatusNotFound {
			t.Errorf("POST %s = %d %q, want 404", path, code, body)
		}
	}
	if got := len(rec.pushes()); got != n {
		t.Errorf("Pusher got %d pushes for other paths, want 0: %+v", got-n, rec.pushes()[n:])
	}
}

func TestNoPusherAnswers404(t *testing.T) {
	s := start(t, listen.Options{})
	if code, body := s.post(t, "/etcha/v1/push/web", strings.NewReader("jwt")); code != http.StatusNotFound {
		t.Errorf("push without a Pusher = %d %q, want 404", code, body)
	}
}

func TestPushErrors(t *testing.T) {
	rec := &recorder{answer: func(ctx context.Context, p listen.Push) (listen.Result, error) {
		if p.Source == "slow" {
			<-ctx.Done()
			return listen.Result{}, fmt.Errorf("run slow: %w", ctx.Err())
		}
		return listen.Result{}, fmt.Errorf("state dir: disk full")
	}}
	s := start(t, listen.Options{Pusher: rec, TimeoutPush: 100 * time.Millisecond})
	if code, body := s.post(t, "/etcha/v1/push/slow", strings.NewReader("jwt")); code != http.StatusGatewayTimeout {
		t.Errorf("push past run.timeoutPush = %d %q, want 504", code, body)
	}
	if code, body := s.post(t, "/etcha/v1/push/web", strings.NewReader("jwt")); code != http.StatusInternalServerError || strings.Contains(body, "disk full") {
		t.Errorf("push with a Pusher error = %d %q, want 500 without the error text", code, body)
	}
	if !s.logs.contains("push failed", "disk full") {
		t.Errorf("log has no push failure:\n%s", s.logs)
	}
}

func TestPushMethodNotAllowed(t *testing.T) {
	rec := &recorder{}
	s := start(t, listen.Options{Pusher: rec})
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, err := http.NewRequest(method, s.url+"/etcha/v1/push/web", strings.NewReader("jwt"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "POST") {
			t.Errorf("%s = %d Allow %q, want 405 Allow: POST", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if n := len(rec.pushes()); n != 0 {
		t.Errorf("Pusher got %d pushes, want 0", n)
	}
}

// unsized hides the length of its reader, so the client sends the body
// chunked, without a Content-Length.
type unsized struct{ io.Reader }

func TestPushTooLarge(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) { testPushTooLarge(t, h2) })
	}
}

func testPushTooLarge(t *testing.T, h2 bool) {
	rec := &recorder{}
	s := start(t, listen.Options{Pusher: rec})
	s.client.Transport.(*http.Transport).ForceAttemptHTTP2 = h2
	big := bytes.Repeat([]byte("a"), 5<<20)
	if code, body := s.post(t, "/etcha/v1/push/web", bytes.NewReader(big)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("5 MiB push with Content-Length = %d %q, want 413", code, body)
	}
	if code, body := s.post(t, "/etcha/v1/push/web", unsized{bytes.NewReader(big)}); code != http.StatusRequestEntityTooLarge {
		t.Errorf("5 MiB chunked push = %d %q, want 413", code, body)
	}
	if code, body := s.post(t, "/etcha/v1/push/web", unsized{bytes.NewReader(big[:listen.MaxPushBytes+1])}); code != http.StatusRequestEntityTooLarge {
		t.Errorf("4 MiB + 1 byte chunked push = %d %q, want 413", code, body)
	}
	if n := len(rec.pushes()); n != 0 {
		t.Fatalf("Pusher got %d pushes over 4 MiB, want 0", n)
	}
	if code, body := s.post(t, "/etcha/v1/push/web", unsized{bytes.NewReader(big[:listen.MaxPushBytes])}); code != http.StatusOK {
		t.Errorf("4 MiB push = %d %q, want 200", code, body)
	}
	if calls := rec.pushes(); len(calls) != 1 || len(calls[0].JWT) != listen.MaxPushBytes {
		t.Errorf("Pusher did not get the 4 MiB push whole")
	}
	resp, err := s.client.Get(s.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.ProtoMajor == 2; got != h2 {
		t.Errorf("protocol %s, want HTTP/2 %v", resp.Proto, h2)
	}
}

// TestPushTooLargeUnread sends only the headers of a push announcing
// 5 MiB: the 413 must come without the server waiting for the body.
func TestPushTooLargeUnread(t *testing.T) {
	rec := &recorder{}
	s := start(t, listen.Options{Pusher: rec})
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate().Leaf)
	conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /etcha/v1/push/web HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 5<<20)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response before the body was sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", resp.StatusCode)
	}
	if n := len(rec.pushes()); n != 0 {
		t.Errorf("Pusher got %d pushes, want 0", n)
	}
}
