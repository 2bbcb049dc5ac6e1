package etcha

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// client is an HTTPS client for a test receiver (its self-signed
// certificate is not checked).
func (r *running) client(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitLong}
}

// do sends one request to the receiver and returns its status, body and
// response headers.
func (r *running) do(t testing.TB, method, path string, body io.Reader, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+r.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.client(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// waitFile waits until p exists and returns its text.
func waitFile(t testing.TB, r *running, p string) string {
	t.Helper()
	return waitLinesIn(t, r, p, 1)
}

// waitLinesIn waits until p has at least n lines and returns its text.
func waitLinesIn(t testing.TB, r *running, p string, n int) string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		if b, err := os.ReadFile(p); err == nil && bytes.Count(b, []byte("\n")) >= n {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %s; log:\n%s", p, waitLong, r.log.String())
		}
		_, changed := r.log.count()
		select { // every run logs, so a log write is the moment to look again
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestRunEventChain: a's start-up run emits etcha:built (allowed by its
// eventsSend) and etcha:secret (not allowed); b receives built and runs
// with the event's environment, and its own etcha:built goes nowhere (no
// cascade); c receives the pull system event of a's pull; stdout prints.
func TestRunEventChain(t *testing.T) {
	dir := t.TempDir()
	jwt := writeFile(t, dir, "a.jwt", signedPattern(t, `{run: [{id: 'noop', always: true, change: 'true'}]}`))
	r := startRun(t, receiverConfig(dir, `{
  a: {pullPaths: ['`+jwt+`']},
  b: {triggerOnly: true, eventsReceive: ['built', 'secret'], eventsSend: '.*', commands: [
    {id: 'record', always: true, onChange: ['etcha:built', 'etcha:stdout'],
     change: 'echo "$ETCHA_EVENT_NAME $ETCHA_EVENT_ID $ETCHA_EVENT_OUTPUT $ETCHA_SOURCE_TRIGGER $ETCHA_SOURCE_NAME" >> `+dir+`/b; echo b-ran'},
  ]},
  c: {triggerOnly: true, eventsReceive: ['pull'], commands: [
    {id: 'pulled', always: true, change: 'echo "$ETCHA_EVENT_NAME from $ETCHA_EVENT_SRC" >> `+dir+`/c'},
  ]},
  z: {eventsSend: '.*', commands: [
    {id: 'build it', always: true, change: 'echo v1', onChange: ['etcha:built', 'etcha:secret']},
  ]},
}`))
	// z sends built and secret (eventsSend .*); b receives both, in
	// emission order; a's pull reaches c.
	got := waitFile(t, r, filepath.Join(dir, "c"))
	if !strings.HasPrefix(got, "pull from") {
		t.Errorf("c got %q, want the pull event", got)
	}
	b := waitLinesIn(t, r, filepath.Join(dir, "b"), 2)
	if want := "built build it v1 event b\nsecret build it v1 event b\n"; b != want {
		t.Errorf("b ran with\n%q, want\n%q", b, want)
	}
	r.log.waitLines(t, 1, "msg=\"Running source b for event built from ID build it\"")
	// b's own etcha:built (an event run) triggered nobody; stdout printed.
	if n, _ := r.log.count("for event built from ID record"); n != 0 {
		t.Errorf("b's event cascaded:\n%s", r.log.String())
	}
	if !strings.Contains(r.out.String(), "b-ran") {
		t.Errorf("stdout event not printed; stdout %q", r.out.String())
	}
}

// TestRunEventsNotSent: without eventsSend nothing leaves a source.
func TestRunEventsNotSent(t *testing.T) {
	dir := t.TempDir()
	app, _ := newApp(t, receiverConfig(dir, `{
  a: {commands: [{id: 'x', always: true, change: 'true', onChange: ['etcha:go']}]},
  b: {triggerOnly: true, eventsReceive: ['go'], commands: [{id: 'y', always: true, change: 'touch `+dir+`/b'}]},
}`))
	app.Now = nil
	if err := app.Run(context.Background(), RunOptions{Once: true}); err != nil {
		t.Fatal(err)
	}
	if fileExists(filepath.Join(dir, "b")) {
		t.Error("b ran for an event a may not send")
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestRunOnceDispatchesEvents: run -o returns only after the events its
// runs caused were dispatched.
func TestRunOnceDispatchesEvents(t *testing.T) {
	dir := t.TempDir()
	app, _ := newApp(t, receiverConfig(dir, `{
  a: {eventsSend: 'go', commands: [{id: 'x', always: true, change: 'true', onChange: ['etcha:go']}]},
  b: {triggerOnly: true, eventsReceive: ['go'], commands: [{id: 'y', always: true, change: 'sleep 0.3; touch `+dir+`/b'}]},
}`))
	app.Now = nil
	if err := app.Run(context.Background(), RunOptions{Once: true}); err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(dir, "b")) {
		t.Fatal("run -o returned before b handled the event")
	}
}

// TestRunExit: a command firing etcha:exit ends `etcha run` by itself,
// with nil, after the run; the receiver of exit ran first.
func TestRunExit(t *testing.T) {
	dir := t.TempDir()
	app, _ := newApp(t, receiverConfig(dir, `{
  a: {commands: [{id: 'bye', always: true, change: 'true', onChange: ['etcha:exit']}, {id: 'after', always: true, change: 'touch `+dir+`/after'}]},
  b: {triggerOnly: true, eventsReceive: ['exit'], commands: [{id: 'y', always: true, change: 'touch `+dir+`/b'}]},
}`))
	app.Now = nil
	done := make(chan error, 1)
	go func() { done <- app.Run(context.Background(), RunOptions{}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after etcha:exit = %v, want nil", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Run did not return after etcha:exit")
	}
	if !fileExists(filepath.Join(dir, "after")) || !fileExists(filepath.Join(dir, "b")) {
		t.Errorf("after exit: the rest of the run ran %v, the exit receiver ran %v; want both",
			fileExists(filepath.Join(dir, "after")), fileExists(filepath.Join(dir, "b")))
	}
}

// TestRunWebhook: the first source in name order that emits webhookBody
// answers, with its content type; the request is in the environment; a
// path nobody answers is 404; a webhook over run.timeoutWebhook is 504
// and its command's process group is killed.
func TestRunWebhook(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.Replace(receiverConfig(dir, `{
  a: {triggerOnly: true, webhookPaths: ['/hook'], commands: [{id: 'quiet', always: true, change: 'touch `+dir+`/a'}]},
  b: {triggerOnly: true, webhookPaths: ['/hook'], commands: [
    {id: 'body', always: true, onChange: ['etcha:webhookBody'],
     change: 'printf "{\\"method\\": \\"%s\\", \\"query\\": \\"%s\\", \\"body\\": \\"%s\\"}" "$ETCHA_WEBHOOK_METHOD" "$ETCHA_WEBHOOK_QUERY" "$(echo $ETCHA_WEBHOOK_BODY | base64 -d)"'},
    {id: 'type', always: true, change: 'echo application/json', onChange: ['etcha:webhookContentType']},
    {id: 'env', always: true, change: 'printf "%s\\n%s\\n" "$ETCHA_WEBHOOK_PATH" "$ETCHA_WEBHOOK_HEADERS" > `+dir+`/env'},
  ]},
  c: {triggerOnly: true, webhookPaths: ['/hook'], commands: [{id: 'never', always: true, change: 'touch `+dir+`/c'}]},
  d: {triggerOnly: true, webhookPaths: ['/none'], commands: [{id: 'no body', always: true, change: 'true'}]},
  slow: {triggerOnly: true, webhookPaths: ['/slow'], commands: [{id: 'slow', always: true, change: 'sleep 60 & echo $! > `+dir+`/pid; wait'}]},
}`), "stateDir:", "timeoutWebhook: '1s', stateDir:", 1)
	r := startRun(t, cfg)
	code, body, h := r.do(t, http.MethodPost, "/hook?x=1", strings.NewReader("hello"), "X-Test", "yes")
	if want := `{"method": "POST", "query": "x=1", "body": "hello"}`; code != 200 || body != want || h.Get("Content-Type") != "application/json" {
		t.Fatalf("POST /hook = %d %q %q, want 200 %q application/json", code, body, h.Get("Content-Type"), want)
	}
	if env := fileText(t, filepath.Join(dir, "env")); !strings.HasPrefix(env, "/hook\n") || !strings.Contains(env, "\nX-Test: yes\n") {
		t.Errorf("ETCHA_WEBHOOK_PATH and _HEADERS = %q, want /hook and a line X-Test: yes", env)
	}
	if !fileExists(filepath.Join(dir, "a")) || fileExists(filepath.Join(dir, "c")) {
		t.Errorf("a ran %v (want true, before b), c ran %v (want false, after the answer)", fileExists(filepath.Join(dir, "a")), fileExists(filepath.Join(dir, "c")))
	}
	if code, _, _ := r.do(t, http.MethodGet, "/none", nil); code != http.StatusNotFound {
		t.Errorf("GET /none (d runs, emits no body) = %d, want 404", code)
	}
	if code, _, _ := r.do(t, http.MethodGet, "/unknown", nil); code != http.StatusNotFound {
		t.Errorf("GET /unknown = %d, want 404", code)
	}
	began := time.Now()
	if code, _, _ := r.do(t, http.MethodGet, "/slow", nil); code != http.StatusGatewayTimeout {
		t.Fatalf("GET /slow = %d, want 504", code)
	}
	if d := time.Since(began); d > 30*time.Second {
		t.Errorf("504 after %v, want about 1s", d)
	}
	// The command's background child (same process group, not the
	// shell that was started) is killed too: gone, or a zombie.
	pid := strings.TrimSpace(fileText(t, filepath.Join(dir, "pid")))
	if pid == "" {
		t.Fatal("the slow command did not start")
	}
	for deadline := time.Now().Add(waitLong); ; {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || bytes.Contains(b, []byte(") Z ")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow command's child (pid %s) still runs %v after the 504: %s", pid, waitLong, b)
		}
		time.Sleep(10 * time.Millisecond) // SIGKILL is delivered asynchronously; bounded by the deadline
	}
	// The daemon still answers.
	if code, _, _ := r.do(t, http.MethodPost, "/hook", nil); code != 200 {
		t.Errorf("POST /hook after the timeout = %d", code)
	}
}

// TestRunMetrics: the metrics endpoint with the key, without it, with a
// wrong one; the §8 names and labels after a start-up run, a refused push
// counted by reason and the last accepted iat.
func TestRunMetrics(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.Replace(receiverConfig(dir, `{
  app: {allowPush: true, commands: [{id: 'write', always: true, change: 'true'}, {id: 'checked', check: 'false', change: 'true'}]},
}`), "stateDir:", "systemMetricsKey: 'sekrit', stateDir:", 1)
	r := startRun(t, cfg)
	if code, _, _ := r.do(t, http.MethodGet, MetricsPath, nil); code != http.StatusUnauthorized {
		t.Errorf("metrics without key = %d, want 401", code)
	}
	if code, _, _ := r.do(t, http.MethodGet, MetricsPath+"?key=wrong", nil); code != http.StatusUnauthorized {
		t.Errorf("metrics with a wrong key = %d, want 401", code)
	}
	// A push signed by another key is refused and counted.
	other, err := token.ParsePrivateKey(otherPrivateKey(t))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := token.Sign(&token.Claims{IssuedAt: time.Now(), Pattern: token.Pattern{Entrypoint: "/m.jsonnet", Files: map[string]string{"/m.jsonnet": "{}"}}}, other)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := r.do(t, http.MethodPost, listen.PushPath+"app", strings.NewReader(forged)); code != http.StatusNotFound {
		t.Fatalf("forged push = %d, want 404", code)
	}
	sender, out := newSender(t, r.addr, true, "app")
	if _, err := push(t, sender, out, PushOptions{Source: "app", Payload: "true"}); err != nil {
		t.Fatal(err)
	}
	code, body, _ := r.do(t, http.MethodGet, MetricsPath+"?key=sekrit", nil)
	if code != 200 {
		t.Fatalf("metrics = %d %q", code, body)
	}
	for _, want := range []string{
		`etcha_sources_total{error="0",name="app",public_key="",remote_addr="",trigger=""} 1`,
		`etcha_commands_total{error="1",id="write",mode="check",parent_id="",public_key="",remote_addr="",source="app"} 1`,
		`etcha_commands_total{error="0",id="write",mode="change",parent_id="",public_key="",remote_addr="",source="app"} 1`,
		`etcha_commands_total{error="1",id="checked",mode="check",parent_id="",public_key="",remote_addr="",source="app"} 1`,
		`etcha_sources_refused_total{name="app",reason="signature"} 1`,
		`etcha_sources_accepted_iat_seconds{name="app"}`,
		`trigger="push"} 1`,
		`etcha_sources_commands{`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestRunMetricsDisabled(t *testing.T) {
	r := startRun(t, receiverConfig(t.TempDir(), `{}`))
	if code, _, _ := r.do(t, http.MethodGet, MetricsPath+"?key=", nil); code != http.StatusNotFound {
		t.Errorf("metrics without run.systemMetricsKey = %d, want 404", code)
	}
}

// signedPattern signs the pattern text with the test key, iat now.
func signedPattern(t testing.TB, text string) string {
	t.Helper()
	return signAt(t, writeFile(t, t.TempDir(), "p.jsonnet", text), time.Now().Truncate(time.Second))
}
