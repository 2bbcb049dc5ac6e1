package etcha

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// shellConfig is a receiver whose source "box" has a shell and whose
// source "watcher" records the shell event; "plain" has no shell.
func shellConfig(dir string) string {
	return strings.Replace(receiverConfig(dir, `{
  box: {shell: {command: '/bin/sh'}},
  plain: {},
  watcher: {triggerOnly: true, eventsReceive: ['shell'], commands: [
    {id: 'saw', always: true, change: 'echo "$ETCHA_EVENT_NAME $ETCHA_EVENT_PUBLIC_KEY" >> `+dir+`/shells'}]},
}`), "stateDir:", "systemMetricsKey: 'k', stateDir:", 1)
}

// shellApp is an App that signs with key (the test key if "") and opens
// shells on the receiver at addr.
func shellApp(t *testing.T, addr, key string) *App {
	t.Helper()
	if key == "" {
		key = testPrivateKey
	}
	app, _ := newApp(t, `{build: {signingKey: '`+key+`'}, httpClient: {tlsSkipVerify: true}}`)
	app.Now = nil
	return app
}

// TestRunShell is a round trip through `etcha shell`'s client code: "echo
// hi" in, "hi" out, exit code 0; then exit 3 comes back as the code. The
// shell event reaches its receiver and the gauge shows the session.
func TestRunShell(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, shellConfig(dir))
	app := shellApp(t, r.addr, "")
	var out, errOut lockedBuffer
	app.Stdout = &out
	stdin, input := io.Pipe()
	ended := make(chan error, 1)
	go func() {
		ended <- app.Shell(context.Background(), ShellOptions{Source: "box", Target: r.addr, Stdin: stdin, Stderr: &errOut})
	}()
	// While the session is open (its shell event ran), the gauge is 1.
	if got := waitFile(t, r, filepath.Join(dir, "shells")); !strings.HasPrefix(got, "shell lAASVe7woP") {
		t.Errorf("shell event receiver got %q, want the shell event with the key ID", got)
	}
	_, body, _ := r.do(t, http.MethodGet, MetricsPath+"?key=k", nil)
	if !strings.Contains(body, `etcha_sources_shells{name="box",public_key="lAASVe7woP",remote_addr="127.0.0.1"} 1`) {
		t.Errorf("metrics lack the open shell's gauge at 1:\n%s", grepLines(body, "shells"))
	}
	io.WriteString(input, "echo hi\necho err >&2\n")
	input.Close()
	var err error
	select {
	case err = <-ended:
	case <-time.After(waitLong):
		t.Fatal("shell did not end after its stdin did")
	}
	if err != nil || out.String() != "hi\n" || errOut.String() != "err\n" {
		t.Fatalf("shell: %v, stdout %q, stderr %q; want nil, hi, err", err, out.String(), errOut.String())
	}
	err = app.Shell(context.Background(), ShellOptions{Source: "box", Target: r.addr, Stdin: strings.NewReader("exit 3\n")})
	if e, ok := errors.AsType[*Error](err); !ok || e.Code != 3 {
		t.Fatalf("shell exiting 3: %v, want exit code 3", err)
	}
	_, body, _ = r.do(t, http.MethodGet, MetricsPath+"?key=k", nil)
	if !strings.Contains(body, `etcha_sources_shells{name="box",public_key="lAASVe7woP",remote_addr="127.0.0.1"} 0`) {
		t.Errorf("metrics lack the ended shell's gauge at 0:\n%s", grepLines(body, "shells"))
	}
}

// TestRunShellRefused: a forged token, an expired one, one that lives too
// long, one for another source, a source without shell.command and an
// unknown source are all 404, logged, and start no shell (its receiver
// never runs); a good session works afterwards.
func TestRunShellRefused(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, shellConfig(dir))
	good, err := token.ParsePrivateKey(testPrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := token.ParsePrivateKey(otherPrivateKey(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	sign := func(key token.PrivateKey, sub string, iat, exp time.Time) string {
		s, err := token.Sign(&token.Claims{Audience: []string{ShellAudience}, Subject: sub, IssuedAt: iat, ExpiresAt: exp, Pattern: shellPattern}, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct{ name, source, tok, log string }{
		{"forged", "box", sign(other, "box", now, now.Add(5*time.Second)), "(signature)"},
		{"expired", "box", sign(good, "box", now.Add(-time.Minute), now.Add(-55*time.Second)), "(expired)"},
		{"too long", "box", sign(good, "box", now, now.Add(time.Hour)), "(shell_lifetime)"},
		{"later window", "box", sign(good, "box", now.Add(time.Hour), now.Add(time.Hour+5*time.Second)), "(shell_lifetime)"},
		{"other source", "box", sign(good, "plain", now, now.Add(5*time.Second)), "(shell_audience)"},
		{"no shell", "plain", sign(good, "plain", now, now.Add(5*time.Second)), "has no shell"},
		{"unknown source", "nope", sign(good, "nope", now, now.Add(5*time.Second)), "has no shell"},
		{"no token", "box", "", "no Authorization"},
	} {
		h := []string{}
		if tc.tok != "" {
			h = []string{"Authorization", "Bearer " + tc.tok}
		}
		if code, _, _ := r.do(t, http.MethodGet, listen.ShellPath+tc.source, nil, h...); code != http.StatusNotFound {
			t.Errorf("%s: GET shell = %d, want 404", tc.name, code)
		}
		if code, _, _ := r.do(t, http.MethodPost, listen.ShellPath+tc.source+"?session=x", strings.NewReader("touch "+dir+"/marker\n"), h...); code != http.StatusNotFound {
			t.Errorf("%s: POST shell = %d, want 404", tc.name, code)
		}
		r.log.waitLines(t, 1, "shell request refused", tc.log)
	}
	if code, _, _ := r.do(t, http.MethodPut, listen.ShellPath+"box", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT shell = %d, want 405", code)
	}
	if n, _ := r.log.count("shell started"); n != 0 || fileExists(filepath.Join(dir, "shells")) || fileExists(filepath.Join(dir, "marker")) {
		t.Fatalf("a refused request started a shell:\n%s", r.log.String())
	}
	// The client reports the refusal; a good session still works.
	app := shellApp(t, r.addr, otherPrivateKey(t))
	if err := app.Shell(context.Background(), ShellOptions{Source: "box", Target: r.addr}); err == nil || !strings.Contains(err.Error(), "shell refused") {
		t.Errorf("shell with a foreign key: %v, want refused", err)
	}
	var out lockedBuffer
	app = shellApp(t, r.addr, "")
	app.Stdout = &out
	if err := app.Shell(context.Background(), ShellOptions{Source: "box", Target: r.addr, Stdin: strings.NewReader("echo ok\n")}); err != nil || out.String() != "ok\n" {
		t.Fatalf("good shell after the refusals: %v, %q", err, out.String())
	}
	_, body, _ := r.do(t, http.MethodGet, MetricsPath+"?key=k", nil)
	for _, want := range []string{`reason="signature"`, `reason="expired"`, `reason="shell_lifetime"`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack refused %s:\n%s", want, grepLines(body, "refused"))
		}
	}
}

// TestRunShellTimeout: run.timeoutShell ends a session and kills its
// shell; the client exits 1 with the server's message on stderr.
func TestRunShellTimeout(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.Replace(shellConfig(dir), "stateDir:", "timeoutShell: '1s', stateDir:", 1)
	r := startRun(t, cfg)
	app := shellApp(t, r.addr, "")
	var errOut lockedBuffer
	stdin, hold := net.Pipe() // stdin that never ends
	defer hold.Close()
	defer stdin.Close()
	began := time.Now()
	err := app.Shell(context.Background(), ShellOptions{Source: "box", Target: r.addr, Stdin: stdin, Stderr: &errOut})
	if e, ok := errors.AsType[*Error](err); !ok || e.Code != 1 || !strings.Contains(errOut.String(), "timeoutShell") {
		t.Fatalf("shell past timeoutShell: %v, stderr %q; want exit 1 and the timeout message", err, errOut.String())
	}
	if d := time.Since(began); d > waitLong/2 {
		t.Errorf("session ended after %v, want about 1s", d)
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
