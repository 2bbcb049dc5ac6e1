package listen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/listen"
)

// shells is a Sheller that accepts the tokens "good" (key k1) and "other"
// (key k2) for the source "web" and starts a real sh.
type shells struct {
	t       testing.TB
	command string // sh -c argument; "" means an interactive sh reading stdin

	mu    sync.Mutex
	count int
}

func newShells(t testing.TB) *shells { return &shells{t: t} }

func (s *shells) Authorize(source, tok string) (string, error) {
	if source != "web" {
		return "", errors.New("no such source")
	}
	switch tok {
	case "good":
		return "k1", nil
	case "other":
		return "k2", nil
	}
	return "", errors.New("token refused: signature")
}

func (s *shells) Start(ctx context.Context, sess listen.Session) (*listen.Process, error) {
	s.mu.Lock()
	s.count++
	s.mu.Unlock()
	e := command.Exec{Command: "sh"}
	if s.command != "" {
		e.Command = "sh -c '" + s.command + "'"
	}
	sh, err := command.StartShell(ctx, e, nil, nil)
	if err != nil {
		return nil, err
	}
	return &listen.Process{Stdin: sh.Stdin, Stdout: sh.Stdout, Stderr: sh.Stderr, Wait: sh.Wait}, nil
}

func (s *shells) started() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// sse reads server-sent events.
type sse struct {
	t    testing.TB
	body io.ReadCloser
	ch   chan [2]string // name, data; closed at the end of the stream
}

func (s *server) openShell(t testing.TB, source, tok string) (*http.Response, *sse) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.url+listen.ShellPath+source, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return resp, nil
	}
	e := &sse{t: t, body: resp.Body, ch: make(chan [2]string, 64)}
	go func() { // ends at the end of the body, which Cleanup closes
		defer close(e.ch)
		sc := bufio.NewScanner(resp.Body)
		var name, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "":
				e.ch <- [2]string{name, data}
			}
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return resp, e
}

// next returns the next event that is not a keepalive.
func (e *sse) next() (string, string) {
	e.t.Helper()
	for {
		select {
		case ev, ok := <-e.ch:
			if !ok {
				e.t.Fatal("event stream ended")
			}
			if ev[0] == "keepalive" {
				continue
			}
			if ev[0] == "stdout" || ev[0] == "stderr" {
				b, err := base64.StdEncoding.DecodeString(ev[1])
				if err != nil {
					e.t.Fatalf("%s event data %q is not base64", ev[0], ev[1])
				}
				ev[1] = string(b)
			}
			return ev[0], ev[1]
		case <-time.After(wait):
			e.t.Fatalf("no event within %v", wait)
		}
	}
}

func (s *server) input(t testing.TB, id, tok, query, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+listen.ShellPath+"web?session="+id+query, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Logf("POST %s: %d %s", query, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// TestShell is a round trip with a real sh: "echo hi" in, "hi" out, then
// stdin closed and the exit code out; keepalives flow meanwhile.
func TestShell(t *testing.T) {
	sh := newShells(t)
	s := start(t, listen.Options{Shells: sh, ShellKeepalive: 50 * time.Millisecond})
	resp, ev := s.openShell(t, "web", "good")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET shell = %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	name, id := ev.next()
	if name != "session" || len(id) < 20 {
		t.Fatalf("first event %s %q, want session with a random ID", name, id)
	}
	// A keepalive arrives while the shell is idle.
	deadline := time.After(wait)
	for got := false; !got; {
		select {
		case e := <-ev.ch:
			got = e[0] == "keepalive" && e[1] != ""
		case <-deadline:
			t.Fatal("no keepalive event")
		}
	}
	// Another key cannot write to this session; an unknown session is 404.
	if code := s.input(t, id, "other", "", "echo no\n"); code != http.StatusNotFound {
		t.Errorf("POST with another key = %d, want 404", code)
	}
	if code := s.input(t, "nosuch", "good", "", "echo no\n"); code != http.StatusNotFound {
		t.Errorf("POST to an unknown session = %d, want 404", code)
	}
	if code := s.input(t, id, "good", "", "echo hi; echo oops >&2\n"); code != http.StatusNoContent {
		t.Fatalf("POST stdin = %d, want 204", code)
	}
	got := map[string]string{}
	for got["stdout"] != "hi\n" || got["stderr"] != "oops\n" {
		name, data := ev.next()
		got[name] += data
		if name != "stdout" && name != "stderr" {
			t.Fatalf("event %s %q, want stdout hi and stderr oops", name, data)
		}
	}
	if code := s.input(t, id, "good", "&eof=true", "exit 3\n"); code != http.StatusNoContent {
		t.Fatalf("POST eof = %d, want 204", code)
	}
	if name, data := ev.next(); name != "exit" || data != "3" {
		t.Fatalf("event %s %q, want exit 3", name, data)
	}
	// The session is gone (404), or about to be with its stdin closed (410).
	if code := s.input(t, id, "good", "", "echo late\n"); code != http.StatusNotFound && code != http.StatusGone {
		t.Errorf("POST after the end = %d, want 404 or 410", code)
	}
}

func TestShellRefused(t *testing.T) {
	sh := newShells(t)
	s := start(t, listen.Options{Shells: sh})
	for _, tc := range []struct{ source, tok string }{{"web", ""}, {"web", "forged"}, {"db", "good"}} {
		if resp, _ := s.openShell(t, tc.source, tc.tok); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET shell %s with token %q = %d, want 404", tc.source, tc.tok, resp.StatusCode)
		}
	}
	if code, _ := s.do(t, http.MethodPut, listen.ShellPath+"web", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT shell = %d, want 405", code)
	}
	if n := sh.started(); n != 0 {
		t.Errorf("%d shells started, want 0", n)
	}
	if !s.logs.contains("shell request refused", "signature") {
		t.Errorf("refusal not logged:\n%s", s.logs)
	}
}

func TestShellTimeout(t *testing.T) {
	sh := newShells(t)
	sh.command = "echo started; exec sleep 60"
	s := start(t, listen.Options{Shells: sh, TimeoutShell: 500 * time.Millisecond})
	began := time.Now()
	_, ev := s.openShell(t, "web", "good")
	ev.next() // session
	if name, data := ev.next(); name != "stdout" || data != "started\n" {
		t.Fatalf("event %s %q, want stdout started", name, data)
	}
	if name, data := ev.next(); name != "error" || !strings.Contains(data, "timeoutShell") {
		t.Fatalf("event %s %q, want an error naming timeoutShell", name, data)
	}
	if name, data := ev.next(); name != "exit" || data != "-1" {
		t.Fatalf("event %s %q, want exit -1 (killed)", name, data)
	}
	if d := time.Since(began); d > wait/2 {
		t.Errorf("session ended after %v", d)
	}
}

// TestShellClientGone closes the stream: the session ends and its shell
// is killed, and the server keeps serving.
func TestShellClientGone(t *testing.T) {
	sh := newShells(t)
	sh.command = "exec sleep 60"
	s := start(t, listen.Options{Shells: sh})
	resp, ev := s.openShell(t, "web", "good")
	_, id := ev.next()
	resp.Body.Close()
	deadline := time.Now().Add(wait)
	for s.input(t, id, "good", "", "") != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatal("session still open after its client went away")
		}
		time.Sleep(20 * time.Millisecond) // polling a state with no event to wait on; bounded by the deadline
	}
	if resp, _ := s.openShell(t, "web", "good"); resp.StatusCode != 200 {
		t.Errorf("new session after that = %d", resp.StatusCode)
	}
}

// TestShellKeepaliveCapped: a keepalive interval over 10 s (or 0) is 10 s:
// on an idle shell the first keepalive comes within 10 s of the session
// event (plus slack for a loaded machine), not after the hour asked for.
func TestShellKeepaliveCapped(t *testing.T) {
	t.Parallel()
	for _, ask := range []time.Duration{time.Hour, 0} {
		t.Run(ask.String(), func(t *testing.T) {
			t.Parallel()
			sh := newShells(t)
			sh.command = "exec sleep 60"
			s := start(t, listen.Options{Shells: sh, ShellKeepalive: ask})
			_, ev := s.openShell(t, "web", "good")
			if e := <-ev.ch; e[0] != "session" {
				t.Fatalf("first event %q, want session", e[0])
			}
			began := time.Now()
			select {
			case e := <-ev.ch:
				if e[0] != "keepalive" || e[1] == "" {
					t.Fatalf("event %q %q on an idle shell, want a keepalive", e[0], e[1])
				}
				if d := time.Since(began); d > listen.MaxKeepalive+3*time.Second {
					t.Errorf("first keepalive after %v, want at most %v", d, listen.MaxKeepalive)
				}
			case <-time.After(wait):
				t.Fatalf("no keepalive within %v", wait)
			}
		})
	}
}

// TestShellInputTooLarge: stdin over MaxBodyBytes to an open session is
// 413, declared or chunked, and none of it reaches the shell; the session
// goes on.
func TestShellInputTooLarge(t *testing.T) {
	sh := newShells(t)
	s := start(t, listen.Options{Shells: sh})
	_, ev := s.openShell(t, "web", "good")
	_, id := ev.next()
	line := []byte("echo leaked\n")
	big := bytes.Repeat(line, listen.MaxBodyBytes/len(line)+1)
	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{"declared", bytes.NewReader(big)},
		{"chunked", io.MultiReader(bytes.NewReader(big))}, // no length: sent chunked
	} {
		req, _ := http.NewRequest(http.MethodPost, s.url+listen.ShellPath+"web?session="+id, tc.body)
		req.Header.Set("Authorization", "Bearer good")
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: POST of %d bytes = %d, want 413", tc.name, len(big), resp.StatusCode)
		}
	}
	if code := s.input(t, id, "good", "", "echo ok\n"); code != http.StatusNoContent {
		t.Fatalf("POST after the refusals = %d, want 204", code)
	}
	if name, data := ev.next(); name != "stdout" || data != "ok\n" {
		t.Fatalf("event %s %q, want stdout ok (nothing of the big bodies)", name, data)
	}
}
