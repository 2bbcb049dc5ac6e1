package etcha

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/source"
)

// receiverConfig is an `etcha run` config on a free loopback port with
// the test key, its state in dir/state, and the given sources.
func receiverConfig(dir, sources string) string {
	return `{
  run: {verifyKeys: ['` + testPublicKey + `'], stateDir: '` + filepath.Join(dir, "state") + `'},
  exec: {command: '/bin/sh -c'},
  httpServer: {listenAddress: '127.0.0.1:0'},
  sources: ` + sources + `,
}`
}

// newSender returns an App that signs with the test key and pushes to
// the receiver at addr as target "recv" for the given sources.
func newSender(t *testing.T, addr string, skipVerify bool, sources ...string) (*App, *bytes.Buffer) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var sp []string
	for _, s := range sources {
		sp = append(sp, fmt.Sprintf("%q: ''", s))
	}
	app, out := newApp(t, `{
  build: {signingKey: '`+testPrivateKey+`'},
  exec: {command: '/bin/sh -c'},
  targets: {recv: {hostname: '`+host+`', port: `+port+`, tlsSkipVerify: `+fmt.Sprint(skipVerify)+`,
                   sourcePatterns: {`+strings.Join(sp, ", ")+`}}},
}`)
	app.Now = nil
	return app, out
}

// push runs App.Push and returns its output and error, resetting out.
func push(t *testing.T, app *App, out *bytes.Buffer, o PushOptions) (string, error) {
	t.Helper()
	out.Reset()
	err := app.Push(context.Background(), o)
	return out.String(), err
}

// TestRunPushTutorial is the §4.4 tutorial by push: a pattern of two
// commands, then a pattern that replaces both (removed in reverse order,
// with the old definitions), then the same pattern again ("No changes").
// The state file follows; a check-mode push and a parent filter change
// nothing they should not.
func TestRunPushTutorial(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, receiverConfig(dir, `{app: {allowPush: true}}`))
	sender, out := newSender(t, r.addr, true, "app")
	f1, f2, f3, p1, p2 := tutorialPatterns(t, dir)
	got, err := push(t, sender, out, PushOptions{Source: "app", Payload: p2, Check: true})
	if err != nil || got != "recv:\n    Would change 1: write a new file\n" || fileText(t, f3) != "" {
		t.Fatalf("check push: %v, output %q, f3 %q; want would change, nothing written", err, got, fileText(t, f3))
	}
	got, err = push(t, sender, out, PushOptions{Source: "app", Payload: p1})
	if err != nil || got != "recv:\n    Changed 2: write a file, copy file\n" {
		t.Fatalf("push 1: %v, output %q", err, got)
	}
	if fileText(t, f1) != "1\n" || fileText(t, f2) != "1\n" {
		t.Fatalf("after push 1: f1 %q f2 %q", fileText(t, f1), fileText(t, f2))
	}
	got, err = push(t, sender, out, PushOptions{Source: "app", Payload: p2})
	if err != nil || got != "recv:\n    Changed 1: write a new file\n    Removed 2: copy file, write a file\n" {
		t.Fatalf("push 2: %v, output %q", err, got)
	}
	if fileText(t, f1) != "" || fileText(t, f2) != "" || fileText(t, f3) != "3\n" {
		t.Fatalf("after push 2: f1 %q f2 %q f3 %q, want only f3", fileText(t, f1), fileText(t, f2), fileText(t, f3))
	}
	state := readFile(t, source.StatePath(filepath.Join(dir, "state"), "app"))
	got, err = push(t, sender, out, PushOptions{Source: "app", Payload: p2})
	if err != nil || got != "recv:\n    No changes\n" {
		t.Fatalf("push 2 again: %v, output %q", err, got)
	}
	if readFile(t, source.StatePath(filepath.Join(dir, "state"), "app")) != state {
		t.Fatal("an unchanged push rewrote the state file")
	}
	r.log.waitLines(t, 1, "msg=push", "source=app", "status=ran", "jti=", "iat=")
	if err := r.stop(); err != nil {
		t.Fatalf("Run after its context ended: %v, want nil", err)
	}
}

// TestRunPushRefusals: a push to an unknown source, to a source without
// allowPush, and of a JWT signed by another key answer 404 ("push didn't
// match any sources", exit 1) and run nothing; a body over 4 MiB is
// 413; an ad-hoc command's output comes back; a receiver whose
// self-signed certificate is not trusted is an error.
func TestRunPushRefusals(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, receiverConfig(dir, `{app: {allowPush: true}, closed: {}}`))
	sender, out := newSender(t, r.addr, true, "app", "closed", "nope")
	marker := filepath.Join(dir, "ran")
	cmd := "echo hello; touch " + marker

	for _, src := range []string{"nope", "closed"} {
		got, err := push(t, sender, out, PushOptions{Source: src, Payload: cmd})
		if err == nil || got != "recv:\n    ERROR: push didn't match any sources\n" {
			t.Fatalf("push to %s: %v, output %q; want a 404 error", src, err, got)
		}
	}
	r.log.waitLines(t, 1, "push refused", `source \"nope\" is not configured`)
	r.log.waitLines(t, 1, "push refused", `source \"closed\" does not set allowPush`)

	other, _ := newApp(t, `{build: {signingKey: '`+otherPrivateKey(t)+`'}, exec: {command: '/bin/sh -c'},
  targets: {recv: {hostname: '127.0.0.1', port: `+portOf(t, r.addr)+`, tlsSkipVerify: true, sourcePatterns: {app: ''}}}}`)
	var oout bytes.Buffer
	other.Stdout = &oout
	if err := other.Push(context.Background(), PushOptions{Source: "app", Payload: cmd}); err == nil || !strings.Contains(oout.String(), "push didn't match any sources") {
		t.Fatalf("push signed by another key: %v, output %q", err, oout.String())
	}
	r.log.waitLines(t, 1, "push refused", "refused the JWT")
	if fileText(t, marker) != "" {
		t.Fatal("a refused push ran its command")
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("https://"+r.addr+"/etcha/v1/push/app", "application/jwt", bytes.NewReader(make([]byte, 4<<20+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 4 MiB + 1 body: %s, want 413", resp.Status)
	}

	// The refusal rows of issue 8's table, pushed: each answers 404 and
	// runs nothing (the newer pattern pushed first makes the last a replay).
	newer := signAt(t, logPattern(t, dir, "newer"), timeNowMinus(1))
	expired := signAt(t, writeFile(t, dir, "exp.jsonnet", `{expiresIn: '1s', run: [{id: 'x', always: true, change: 'touch `+marker+`2'}]}`), timeNowMinus(5))
	older := signAt(t, logPattern(t, dir, "older"), timeNowMinus(3))
	for i, body := range []string{newer, "not a jwt", "", "\x00\xff\x01", expired, older} {
		resp, err := client.Post("https://"+r.addr+"/etcha/v1/push/app", "application/jwt", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[i == 0]; resp.StatusCode != want {
			t.Fatalf("push %d: %s, want %d", i, resp.Status, want)
		}
	}
	if fileText(t, filepath.Join(dir, "app.log")) != "newer\n" || fileText(t, marker+"2") != "" {
		t.Fatalf("after the refused pushes: app.log %q, want only the newer pattern's run", fileText(t, filepath.Join(dir, "app.log")))
	}
	r.log.waitLines(t, 1, "msg=push", "status=refused", "reason=rollback")

	got, err := push(t, sender, out, PushOptions{Source: "app", Payload: cmd})
	if err != nil || got != "recv:\n    hello\n" {
		t.Fatalf("ad-hoc push: %v, output %q", err, got)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the ad-hoc command did not run: %v", err)
	}

	say := writeFile(t, dir, "say.jsonnet", `{run: [{id: 'say', always: true, change: 'echo said', onChange: ['etcha:stdout']}]}`)
	if got, err := push(t, sender, out, PushOptions{Source: "app", Payload: say}); err != nil || got != "recv:\n    Changed 1: say\n" {
		t.Fatalf("push of a pattern with etcha:stdout: %v, output %q", err, got)
	}
	if got := r.out.String(); got != "said\n" {
		t.Fatalf("etcha run's stdout %q, want the etcha:stdout event's output", got)
	}

	strict, sout := newSender(t, r.addr, false, "app")
	got, err = push(t, strict, sout, PushOptions{Source: "app", Payload: "true"})
	var e *Error
	if !errors.As(err, &e) || e.Code != 1 || !strings.Contains(got, "ERROR: POST https://") || !strings.Contains(got, "not trusted") {
		t.Fatalf("push to a self-signed receiver without tlsSkipVerify: %v, output %q", err, got)
	}
}

// otherPrivateKey returns a fresh private key that the receivers do not
// trust.
func otherPrivateKey(t *testing.T) string {
	t.Helper()
	app, out := newApp(t, "")
	if err := app.GenerateKeys(""); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	i := strings.Index(s, `"privateKey": "`)
	if i < 0 {
		t.Fatalf("generate-keys printed %q", s)
	}
	s = s[i+len(`"privateKey": "`):]
	return s[:strings.Index(s, `"`)]
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// tutorialPatterns writes the two patterns of the §4.4 tutorial: p1 writes
// f1 and (on change) copies it to f2; p2 only writes f3.
func tutorialPatterns(t *testing.T, dir string) (f1, f2, f3, p1, p2 string) {
	t.Helper()
	f1, f2, f3 = filepath.Join(dir, "f1"), filepath.Join(dir, "f2"), filepath.Join(dir, "f3")
	p1 = writeFile(t, dir, "p1.jsonnet", `{run: [
  {id: 'write a file', always: true, check: 'test -f `+f1+`', change: 'echo 1 > `+f1+`', remove: 'rm `+f1+`', onChange: ['copy file']},
  {id: 'copy file', check: 'test -f `+f2+`', change: 'cp `+f1+` `+f2+`', remove: 'rm `+f2+`'},
]}`)
	p2 = writeFile(t, dir, "p2.jsonnet", `{run: [
  {id: 'write a new file', check: 'test -f `+f3+`', change: 'echo 3 > `+f3+`', remove: 'rm `+f3+`'},
]}`)
	return f1, f2, f3, p1, p2
}
