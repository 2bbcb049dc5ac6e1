package pull_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/leaktest"
	"github.com/dispenser-dev/dispenser/internal/pull"
)

// wait is the generous bound for anything a test waits for; CI is a slow,
// shared 2-core machine.
const wait = 30 * time.Second

// TestMain fails the run if goroutines of this package, the etcd client or
// gRPC outlive the tests.
func TestMain(m *testing.M) { os.Exit(leaktest.Main(m)) }

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func mustParse(t testing.TB, entry string) pull.Path {
	t.Helper()
	p, err := pull.Parse(entry)
	if err != nil {
		t.Fatalf("Parse(%q): %v", entry, err)
	}
	return p
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantErr fails unless err is a one-line error containing each of parts.
func wantErr(t testing.TB, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want an error containing %q", what, parts)
	}
	msg := err.Error()
	for _, p := range parts {
		if !strings.Contains(msg, p) || strings.Contains(msg, "\n") {
			t.Fatalf("%s error = %q, want one line containing %q", what, msg, p)
		}
	}
}

func TestFetchFile(t *testing.T) {
	dir := t.TempDir()
	f := pull.New(pull.Options{MaxSize: 10})
	ok := writeFile(t, dir, "ok.jwt", "0123456789")
	got, err := f.Fetch(ctxT(t), mustParse(t, ok))
	if err != nil || got != "0123456789" {
		t.Fatalf("Fetch(%s) = %q, %v; want the file's 10 bytes", ok, got, err)
	}
	big := writeFile(t, dir, "big.jwt", "0123456789A")
	_, err = f.Fetch(ctxT(t), mustParse(t, big))
	wantErr(t, "Fetch of an 11-byte file with MaxSize 10", err, big, "larger than 10 bytes")
	fifo := filepath.Join(dir, "fifo.jwt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = f.Fetch(ctxT(t), mustParse(t, fifo)) // would block in open without O_NONBLOCK
	wantErr(t, "Fetch of a FIFO", err, fifo, "not a regular file")
	_, err = f.Fetch(ctxT(t), mustParse(t, dir))
	wantErr(t, "Fetch of a directory", err, dir, "not a regular file")
	missing := filepath.Join(dir, "missing.jwt")
	_, err = f.Fetch(ctxT(t), mustParse(t, missing))
	wantErr(t, "Fetch of a missing file", err, missing, "no such file")
}

// server is an httptest server that records the headers of the last request.
type server struct {
	*httptest.Server
	headers chan http.Header
}

func newServer(t testing.TB, tls bool, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{headers: make(chan http.Header, 10)}
	wrapped := func(w http.ResponseWriter, r *http.Request) {
		s.headers <- r.Header.Clone()
		h(w, r)
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(wrapped))
	// Refused certificates are expected; keep them out of the test log.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func serve(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }
}

func TestFetchHTTPS(t *testing.T) {
	s := newServer(t, true, serve("jwt-text"))
	ctx := ctxT(t)

	// The test server's certificate is self-signed: refused unless asked.
	_, err := pull.New(pull.Options{}).Fetch(ctx, mustParse(t, s.URL+"/x.jwt"))
	wantErr(t, "Fetch from a self-signed server", err, s.URL+"/x.jwt", "certificate is not trusted", "#skipVerify")

	for _, tc := range []struct {
		name  string
		opts  pull.Options
		entry string
	}{
		{"skipVerify", pull.Options{}, s.URL + "/x.jwt#skipVerify\r\nAuthorization:Bearer tok\r\nX-Other: 1"},
		{"clientSkipVerify", pull.Options{}, s.URL + "/x.jwt#Authorization:Bearer tok\r\nclientSkipVerify:\r\nX-Other:1"},
		{"httpClient.tlsSkipVerify", pull.Options{TLSSkipVerify: true}, s.URL + "/x.jwt#Authorization:Bearer tok\r\nX-Other:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pull.New(tc.opts).Fetch(ctx, mustParse(t, tc.entry))
			if err != nil || got != "jwt-text" {
				t.Fatalf("Fetch = %q, %v; want the body", got, err)
			}
			var h http.Header
			for len(s.headers) > 0 { // the last request's headers
				h = <-s.headers
			}
			if got, want := h.Get("Authorization"), "Bearer tok"; got != want {
				t.Errorf("Authorization header = %q, want %q", got, want)
			}
			if got, want := h.Get("X-Other"), "1"; got != want {
				t.Errorf("X-Other header = %q, want %q", got, want)
			}
			for _, special := range []string{"skipVerify", "clientSkipVerify"} {
				if _, ok := h[http.CanonicalHeaderKey(special)]; ok {
					t.Errorf("the special header %s was sent to the server", special)
				}
			}
		})
	}
}

func TestFetchHTTPStatus(t *testing.T) {
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nothing here", http.StatusNotFound)
	})
	_, err := pull.New(pull.Options{}).Fetch(ctxT(t), mustParse(t, s.URL+"/x.jwt"))
	wantErr(t, "Fetch of a 404", err, s.URL+"/x.jwt", "404 Not Found")
}

func TestFetchHTTPTooLarge(t *testing.T) {
	f := pull.New(pull.Options{MaxSize: 10})
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"content-length", serve("0123456789A")},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			for range 3 {
				w.Write([]byte("0123456789"))
				w.(http.Flusher).Flush() // no Content-Length
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, false, tc.h)
			_, err := f.Fetch(ctx, mustParse(t, s.URL+"/x.jwt"))
			wantErr(t, "Fetch of a body over MaxSize", err, "larger than 10 bytes")
		})
	}
	s := newServer(t, false, serve("0123456789"))
	if got, err := f.Fetch(ctx, mustParse(t, s.URL+"/x.jwt")); err != nil || got != "0123456789" {
		t.Fatalf("Fetch of exactly MaxSize = %q, %v; want the body", got, err)
	}
}

func TestFetchHTTPTimeout(t *testing.T) {
	t.Parallel()
	s := newServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		select { // until the client gives up; bounded in case it never does
		case <-r.Context().Done():
		case <-time.After(wait):
		}
	})
	start := time.Now()
	_, err := pull.New(pull.Options{}).Fetch(ctxT(t), mustParse(t, s.URL+"/x.jwt#clientTimeout:1\r\nskipVerify"))
	took := time.Since(start)
	wantErr(t, "Fetch from a server that never answers", err, "no complete answer within 1s", "clientTimeout")
	// The default timeout is 10s: ending well before shows clientTimeout
	// was honoured.
	if took < time.Second || took > 7*time.Second {
		t.Fatalf("Fetch gave up after %v, want about 1s", took)
	}
}

func TestFirst(t *testing.T) {
	dir := t.TempDir()
	missing := mustParse(t, filepath.Join(dir, "missing.jwt"))
	bad := mustParse(t, writeFile(t, dir, "bad.jwt", "forged"))
	good := mustParse(t, writeFile(t, dir, "good.jwt", "signed"))
	also := mustParse(t, writeFile(t, dir, "also.jwt", "signed"))
	f := pull.New(pull.Options{})
	var offered []string
	accept := func(p pull.Path, jwt string) error {
		offered = append(offered, p.String()+"="+jwt)
		if jwt != "signed" {
			return errors.New("signature invalid")
		}
		return nil
	}

	won, err := f.First(ctxT(t), []pull.Path{missing, bad, good, also}, accept)
	if err != nil || won.File != good.File {
		t.Fatalf("First = %v, %v; want %v", won, err, good)
	}
	if got, want := strings.Join(offered, " "), bad.File+"=forged "+good.File+"=signed"; got != want {
		t.Errorf("accept saw %q, want %q (in order, stopping at the winner)", got, want)
	}

	_, err = f.First(ctxT(t), []pull.Path{missing, bad}, accept)
	wantErr(t, "First with no acceptable path", err, "read "+missing.File+": ", "no such file", bad.File+": refused: signature invalid")
	var fe *pull.FirstError
	if !errors.As(err, &fe) || len(fe.Errs) != 2 || pull.Refused(fe.Errs[0]) || !pull.Refused(fe.Errs[1]) {
		t.Fatalf("First error = %#v, want a FirstError: fetch failed, then refused", err)
	}

	_, err = f.First(ctxT(t), nil, accept)
	wantErr(t, "First with no paths", err, "no pullPaths")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	offered = nil
	_, err = f.First(ctx, []pull.Path{good}, accept)
	if !errors.Is(err, context.Canceled) || len(offered) != 0 {
		t.Fatalf("First after cancel = %v (accept saw %q), want context.Canceled and no fetch", err, offered)
	}
}

// TestFetchHTTPRedirect: a redirect on the same server is followed; one to
// another host is refused, so the pull path's headers never reach it.
func TestFetchHTTPRedirect(t *testing.T) {
	var leaked atomic.Bool
	other := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		w.Write([]byte("elsewhere"))
	})
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved.jwt":
			http.Redirect(w, r, "/x.jwt", http.StatusFound)
		case "/away.jwt":
			http.Redirect(w, r, other.URL+"/x.jwt", http.StatusFound)
		default:
			w.Write([]byte("here"))
		}
	})
	f := pull.New(pull.Options{})
	got, err := f.Fetch(ctxT(t), mustParse(t, s.URL+"/moved.jwt#Authorization:Bearer secret"))
	if err != nil || got != "here" {
		t.Fatalf("same-host redirect: %q, %v; want %q", got, err, "here")
	}
	_, err = f.Fetch(ctxT(t), mustParse(t, s.URL+"/away.jwt#Authorization:Bearer secret"))
	wantErr(t, "redirect to another host", err, "pull from the final address instead")
	if leaked.Load() {
		t.Fatal("the other host received the Authorization header")
	}
}
