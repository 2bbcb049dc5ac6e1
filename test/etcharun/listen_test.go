package etcharun_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestListenMode drives the binaries as the README walkthroughs do: a
// pushed pattern's event runs a second source (an event chain across two
// sources, its stdout event printed by `etcha run`); a webhook answers
// with a body; `etcha shell` runs "echo hi" and relays the remote exit
// code; a shell signed by a foreign key is refused and runs nothing; the
// metrics endpoint counts it all; SIGTERM exits 0.
func TestListenMode(t *testing.T) {
	bin, cfg, dir := setup(t, `{
    deploy: {allowPush: true, eventsSend: 'deployed'},
    notify: {triggerOnly: true, eventsReceive: ['deployed'], commands: [
      {id: 'tell', always: true, change: 'echo "deployed $ETCHA_EVENT_OUTPUT (from $ETCHA_EVENT_ID)"', onChange: ['etcha:stdout']}]},
    hello: {triggerOnly: true, webhookPaths: ['/hello'], commands: [
      {id: 'answer', always: true, change: 'echo "hello, $(echo $ETCHA_WEBHOOK_BODY | base64 -d)"', onChange: ['etcha:webhookBody']}]},
    box: {shell: {command: '/bin/sh'}, commands: [{id: 'never', always: true, change: 'true'}]},
    watcher: {triggerOnly: true, eventsReceive: ['shell'], commands: [{id: 'saw', always: true, change: 'echo "$ETCHA_EVENT_NAME" >> SHELLS_FILE'}]},
  }`)
	b, _ := os.ReadFile(cfg)
	shells := filepath.Join(dir, "shells")
	b = []byte(strings.Replace(string(b), "SHELLS_FILE", shells, 1))
	b = []byte(strings.Replace(string(b), "run: {", "run: {systemMetricsKey: 'k', ", 1))
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, bin, cfg, nil, "run")
	addr := e.log.wait(t, 1, `msg=listening .*addr=(127\.0\.0\.1:\d+)`)[1]

	// Event chain: deploy's command fires etcha:deployed; notify runs.
	pat := filepath.Join(dir, "deploy.jsonnet")
	text := `{run: [{id: 'install v2', always: true, change: 'echo v2', onChange: ['etcha:deployed']}]}`
	if err := os.WriteFile(pat, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", cfg, "push", "-h", addr, "deploy", pat).CombinedOutput()
	if err != nil || string(out) != addr+":\n    Changed 1: install v2\n" {
		t.Fatalf("push: %v, output %q", err, out)
	}
	e.log.wait(t, 1, `Running source notify for event deployed from ID install v2`)
	e.log.wait(t, 1, `(?m)^deployed v2 \(from install v2\)$`)

	// Webhook answering with a body.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: waitLong}
	defer c.CloseIdleConnections()
	resp, err := c.Post("https://"+addr+"/hello", "text/plain", strings.NewReader("world"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, world" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("POST /hello = %d %q %q, want 200 %q text/plain", resp.StatusCode, body, resp.Header.Get("Content-Type"), "hello, world")
	}

	// Shell round trip, then the remote exit code.
	sh := exec.Command(bin, "-c", cfg, "shell", "box", addr)
	sh.Stdin = strings.NewReader("echo hi\n")
	out, err = sh.Output()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("etcha shell with echo hi: %v, stdout %q", err, out)
	}
	sh = exec.Command(bin, "-c", cfg, "shell", "box", addr)
	sh.Stdin = strings.NewReader("exit 7\n")
	var ee *exec.ExitError
	if err := sh.Run(); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("etcha shell with exit 7: %v, want exit status 7", err)
	}
	e.log.wait(t, 2, `msg="Running source watcher for event shell`)

	// A foreign key: refused, logged, nothing started.
	keys, err := exec.Command(bin, "generate-keys").Output()
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ PrivateKey string }
	if err := json.Unmarshal(keys, &k); err != nil {
		t.Fatal(err)
	}
	sh = exec.Command(bin, "-c", cfg, "-x", "build_signingKey="+k.PrivateKey, "shell", "box", addr)
	sh.Stdin = strings.NewReader("touch " + filepath.Join(dir, "marker") + "\n")
	stderr, err := sh.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(stderr), "shell refused") {
		t.Fatalf("etcha shell with a foreign key: %v, output %q; want exit 1, refused", err, stderr)
	}
	e.log.wait(t, 1, `msg="shell request refused".*\(signature\)`)
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Fatal("a refused shell ran its input")
	}
	if got, _ := os.ReadFile(shells); string(got) != "shell\nshell\n" {
		t.Fatalf("shell events %q, want two", got)
	}

	resp, err = c.Get("https://" + addr + "/etcha/v1/system/metrics?key=k")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`etcha_sources_total{error="0",name="notify",public_key="",remote_addr="",trigger="event"} 1`,
		`etcha_sources_total{error="0",name="hello",public_key="",remote_addr="127.0.0.1",trigger="webhook"} 1`,
		`etcha_sources_refused_total{name="box",reason="signature"} 1`,
		`etcha_sources_shells{name="box",`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.exit(t); code != 0 {
		t.Fatalf("etcha run after SIGTERM: exit %d, want 0", code)
	}
}

// TestListenExit: a command firing etcha:exit ends `etcha run` with exit
// status 0 after its run, and the receivers of exit ran.
func TestListenExit(t *testing.T) {
	bin, cfg, _ := setup(t, `{
    a: {commands: [{id: 'done', always: true, change: 'true', onChange: ['etcha:exit']}]},
    b: {triggerOnly: true, eventsReceive: ['exit'], commands: [{id: 'bye', always: true, change: 'echo bye', onChange: ['etcha:stdout']}]},
  }`)
	e := start(t, bin, cfg, nil, "run")
	if code := e.exit(t); code != 0 {
		t.Fatalf("etcha run after etcha:exit: exit %d, want 0", code)
	}
	if !strings.Contains(e.log.String(), "\nbye\n") {
		t.Errorf("the exit receiver did not print; output:\n%s", e.log.String())
	}
}

// TestListenRateLimit is the README's rate-limit example with the binary:
// httpServer.rateLimitRate "3/m" lets a client send 3 requests at once,
// then answers 429 with Retry-After in whole seconds (here up to 20, the
// time one token takes) on every endpoint, metrics included, and logs
// it; the metrics endpoint answers 401 to a wrong key before that.
func TestListenRateLimit(t *testing.T) {
	bin, cfg, _ := setup(t, `{}`)
	b, _ := os.ReadFile(cfg)
	b = []byte(strings.Replace(string(b), "listenAddress: '127.0.0.1:0'", "listenAddress: '127.0.0.1:0', rateLimitRate: '3/m'", 1))
	b = []byte(strings.Replace(string(b), "run: {", "run: {systemMetricsKey: 'k', ", 1))
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, bin, cfg, nil, "run")
	addr := e.log.wait(t, 1, `msg=listening .*addr=(127\.0\.0\.1:\d+)`)[1]
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: waitLong}
	defer c.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := c.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i, want := range []int{401, 404, 404} {
		path := map[bool]string{true: "/etcha/v1/system/metrics?key=wrong", false: "/nothing"}[i == 0]
		if code, _ := get(path); code != want {
			t.Fatalf("request %d (%s) = %d, want %d", i+1, path, code, want)
		}
	}
	for _, path := range []string{"/nothing", "/etcha/v1/system/metrics?key=k", "/etcha/v1/push/x"} {
		code, retry := get(path)
		if n, err := strconv.Atoi(retry); code != http.StatusTooManyRequests || err != nil || n < 1 || n > 20 {
			t.Errorf("%s over the rate = %d Retry-After %q, want 429 and 1..20 s", path, code, retry)
		}
	}
	e.log.wait(t, 3, `msg="rate limited".*retryAfter=`)
}
