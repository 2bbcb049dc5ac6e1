package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// webhook calls Webhook with a 30 s deadline and fails on an error.
func webhook(tb testing.TB, e *Engine, r WebhookRequest) WebhookReply {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := e.Webhook(ctx, r)
	if err != nil {
		tb.Fatalf("Webhook(%s %s): %v", r.Method, r.Path, err)
	}
	return rep
}

// bodyPattern logs word and answers body.
func bodyPattern(word, body string) string {
	return `{run: [{id: 'answer', always: true, change: 'echo ` + word + ` >> "$D/log"; echo ` + body + `', onChange: ['etcha:webhookBody']}]}`
}

// Paths match exactly; any method is served.
func TestWebhookPathsExactAnyMethod(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "h", WebhookPaths: []string{"/hook"}, Static: v.pat(bodyPattern("h", "hi"))})
	for _, p := range []string{"/hook/", "/Hook", "/hook?x", "/", "hook", "/hook2"} {
		if rep := webhook(t, e, WebhookRequest{Method: "GET", Path: p}); rep.Found {
			t.Errorf("path %q answered %+v; want not found", p, rep)
		}
	}
	if got := v.log(); got != "" {
		t.Fatalf("other paths ran the source: log %q", got)
	}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"} {
		rep := webhook(t, e, WebhookRequest{Method: m, Path: "/hook"})
		if !rep.Found || rep.Body != "hi" || rep.Source != "h" || rep.ContentType != "" {
			t.Errorf("%s /hook: %+v; want found, body hi from h, no content type", m, rep)
		}
	}
}

// Sources run in name order until one answers: its first webhookBody and
// webhookContentType make the reply; later sources do not run.
func TestWebhookFirstBodyWins(t *testing.T) {
	v := newEnv(t)
	paths := []string{"/hook"}
	e := v.engine(Options{},
		Config{Name: "d", WebhookPaths: paths, Static: v.pat(bodyPattern("d", "D"))},
		Config{Name: "c", WebhookPaths: paths, Static: v.pat(`{run: [
		  {id: 'type1', always: true, change: 'echo c >> "$D/log"; echo application/json', onChange: ['etcha:webhookContentType']},
		  {id: 'body1', always: true, change: "echo '{\"n\": 1}'", onChange: ['etcha:webhookBody']},
		  {id: 'body2', always: true, change: 'echo second', onChange: ['etcha:webhookBody']},
		  {id: 'type2', always: true, change: 'echo text/html', onChange: ['etcha:webhookContentType']},
		]}`)},
		Config{Name: "b", WebhookPaths: paths, Static: v.pat(logPattern("b"))},
		Config{Name: "a", WebhookPaths: paths}, // no pattern: passes
		Config{Name: "other", WebhookPaths: []string{"/else"}, Static: v.pat(bodyPattern("other", "O"))})
	rep := webhook(t, e, WebhookRequest{Method: "POST", Path: "/hook"})
	want := WebhookReply{Found: true, Body: `{"n": 1}`, ContentType: "application/json", Source: "c"}
	if rep != want {
		t.Errorf("reply %+v, want %+v", rep, want)
	}
	if got, want := v.log(), "b,c"; got != want {
		t.Errorf("log %q, want %q (d must not run after c answered)", got, want)
	}
}

// No source answering (none listed, none with a pattern, none emitting a
// body, a failing one) is not found.
func TestWebhookNotFound(t *testing.T) {
	v := newEnv(t)
	paths := []string{"/hook"}
	e := v.engine(Options{},
		Config{Name: "a", WebhookPaths: paths},
		Config{Name: "b", WebhookPaths: paths, Static: v.pat(logPattern("b"))},
		Config{Name: "c", WebhookPaths: paths, Static: v.pat(`{run: [{id: 'fail', always: true, change: 'echo c >> "$D/log"; exit 1', onChange: ['etcha:webhookBody']}]}`)})
	for _, p := range []string{"/none", "/hook"} {
		if rep := webhook(t, e, WebhookRequest{Method: "GET", Path: p}); rep != (WebhookReply{}) {
			t.Errorf("%s: reply %+v, want the zero reply", p, rep)
		}
	}
	if got, want := v.log(), "b,c"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// tripCtx is a context whose deadline passes when the test says so.
type tripCtx struct {
	context.Context
	done chan struct{}
}

func (c *tripCtx) Done() <-chan struct{} { return c.done }

func (c *tripCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// The caller's deadline ends the webhook: Webhook returns its error, the
// script's process group is killed (its background child too), and no
// later source runs.
func TestWebhookDeadlineKillsGroup(t *testing.T) {
	v := newEnv(t)
	paths := []string{"/slow"}
	e := v.engine(Options{},
		Config{Name: "a", WebhookPaths: paths, Static: v.pat(`{run: [{id: 'hang', always: true, change: |||
		  sleep 300 &
		  echo $! > "$D/pid.tmp"; mv "$D/pid.tmp" "$D/pid"
		  wait
		|||, onChange: ['etcha:webhookBody']}]}`)},
		Config{Name: "b", WebhookPaths: paths, Static: v.pat(bodyPattern("b", "late"))})
	ctx := &tripCtx{Context: context.Background(), done: make(chan struct{})}
	type answer struct {
		rep WebhookReply
		err error
	}
	got := make(chan answer, 1)
	go func() {
		rep, err := e.Webhook(ctx, WebhookRequest{Method: "GET", Path: "/slow"})
		got <- answer{rep, err}
	}()
	v.waitLog("the script", func(string) bool { return v.exists("pid") })
	b, err := os.ReadFile(filepath.Join(v.dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	// A second request's deadline passes while it waits in a's queue: it
	// gets the error and the running script is untouched.
	queued, cancelQueued := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelQueued()
	if _, err := e.Webhook(queued, WebhookRequest{Method: "GET", Path: "/slow"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued Webhook with a 300 ms deadline: %v, want context.DeadlineExceeded", err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the first request's background child died with the second request's deadline: %v", err)
	}
	close(ctx.done)
	select {
	case a := <-got:
		if !errors.Is(a.err, context.DeadlineExceeded) || a.rep != (WebhookReply{}) {
			t.Errorf("Webhook: %+v, %v; want the zero reply and context.DeadlineExceeded", a.rep, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Webhook still running 30 s after its deadline")
	}
	waitGone(t, pid)
	if got := v.log(); got != "" {
		t.Errorf("log %q: b ran after the deadline", got)
	}
	// A real deadline gives the same error.
	dl, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := e.Webhook(dl, WebhookRequest{Method: "GET", Path: "/slow"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Webhook with a 500 ms deadline: %v, want context.DeadlineExceeded", err)
	}
}

// waitGone waits up to 20 s for pid to have exited (gone, or a zombie
// nobody reaped yet).
func waitGone(tb testing.TB, pid int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			// the state is the first field after the ")" that ends the name
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("process %d still running 20 s after its group was killed (%s)", pid, fmt.Sprint(err))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// §2.7: the request in ETCHA_WEBHOOK_*, and the source and trigger.
func TestWebhookEnv(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "h", WebhookPaths: []string{"/hook"}, Static: v.pat(`{run: [{id: 'dump', always: true, change: |||
	  for n in METHOD PATH QUERY HEADERS BODY; do eval "printf '%s=%s\n' $n \"\$ETCHA_WEBHOOK_$n\""; done > "$D/env"
	  echo "$ETCHA_SOURCE_NAME $ETCHA_SOURCE_TRIGGER"
	|||, onChange: ['etcha:webhookBody']}]}`)})
	rep := webhook(t, e, WebhookRequest{Method: "PATCH", Path: "/hook", RawQuery: "a=1&b=2",
		Header:     http.Header{"x-b": {"2"}, "X-A": {"1", "0"}, "Content-Type": {"text/x"}},
		Body:       []byte("some data"),
		RemoteAddr: "192.0.2.7:5555"})
	if rep.Body != "h webhook" {
		t.Errorf("source and trigger %q, want %q", rep.Body, "h webhook")
	}
	b, err := os.ReadFile(filepath.Join(v.dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	want := "METHOD=PATCH\nPATH=/hook\nQUERY=a=1&b=2\nHEADERS=Content-Type: text/x\nX-A: 1\nX-A: 0\nX-B: 2\nBODY=c29tZSBkYXRh\n"
	if string(b) != want {
		t.Errorf("env:\n%s\nwant:\n%s", b, want)
	}
}

// A webhook runs the current pattern with no diff, triggerOnly does not
// stop it, and the events it emits go to no source (their internal
// effects apply).
func TestWebhookTriggerOnlyNoCascade(t *testing.T) {
	v := newEnv(t)
	var out syncBuf
	var mu sync.Mutex
	var results []Result
	e := v.engine(Options{Stdout: &out, OnResult: func(_ string, o Origin, r Result) {
		if o.Trigger == TriggerWebhook {
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		}
	}},
		Config{Name: "h", TriggerOnly: true, EventsSend: ".*", WebhookPaths: []string{"/hook"}},
		Config{Name: "recv", EventsReceive: []string{"x"}, Static: v.pat(recvPattern)})
	receive(t, e, "h", v.sign(`{run: [{id: 'old', check: 'true', remove: 'echo removed >> "$D/log"'}]}`), push)
	jwt := v.sign(`{run: [{id: 'answer', always: true, change: 'echo h >> "$D/log"; echo ok', onChange: ['etcha:x', 'etcha:stdout', 'etcha:webhookBody']}]}`)
	if r := receive(t, e, "h", jwt, push); r.Status != StatusStored {
		t.Fatalf("triggerOnly push: status %s, want stored", r.Status)
	}
	rep := webhook(t, e, WebhookRequest{Method: "POST", Path: "/hook", RemoteAddr: "192.0.2.7:5555"})
	idle(t, e)
	if !rep.Found || rep.Body != "ok" {
		t.Errorf("reply %+v, want body ok", rep)
	}
	if got, want := v.log(), "h"; got != want {
		t.Errorf("log %q, want %q (no removal, no event run)", got, want)
	}
	if got, want := out.String(), "ok\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 1 || results[0].Status != StatusRan || len(results[0].Removed) != 0 || results[0].Origin.Where != "192.0.2.7:5555" {
		t.Errorf("webhook results %+v; want one ran, nothing removed, from 192.0.2.7:5555", results)
	}
}

// WebhookPaths lists every served path once, sorted, Add'ed sources too.
func TestWebhookPathsList(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "b", WebhookPaths: []string{"/z", "/a", "/m"}},
		Config{Name: "a", WebhookPaths: []string{"/m", "/a"}},
		Config{Name: "c"})
	if got, want := e.WebhookPaths(), []string{"/a", "/m", "/z"}; !slices.Equal(got, want) {
		t.Errorf("WebhookPaths %q, want %q", got, want)
	}
	if err := e.Add(context.Background(), Config{Name: "d", WebhookPaths: []string{"/b", "/z"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.WebhookPaths(), []string{"/a", "/b", "/m", "/z"}; !slices.Equal(got, want) {
		t.Errorf("after Add: WebhookPaths %q, want %q", got, want)
	}
}

// A request cannot write shell code: ${ETCHA_WEBHOOK_*} in a command is left
// for the shell, which expands it as a value (internal/command, expand).
func TestWebhookInputIsNotCode(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "h", WebhookPaths: []string{"/hook"}, Static: v.pat(`{run: [{id: 'echo', always: true,
	  change: 'echo "${ETCHA_WEBHOOK_QUERY}|${ETCHA_WEBHOOK_METHOD}"', onChange: ['etcha:webhookBody']}]}`)})
	query := `x=$(touch "$D/pwned")` + "`touch \"$D/pwned2\"`"
	rep := webhook(t, e, WebhookRequest{Method: "GET", Path: "/hook", RawQuery: query})
	if want := query + "|GET"; rep.Body != want {
		t.Errorf("body %q, want the query as text %q", rep.Body, want)
	}
	for _, f := range []string{"pwned", "pwned2"} {
		if _, err := os.Stat(filepath.Join(v.dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the query ran as code: %s exists (stat: %v)", f, err)
		}
	}
}
