package etcha

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// badInputConfig is a receiver where every endpoint would create marker
// if it ran a command: a push source, a webhook source, a shell source
// whose shell event receiver touches it too, and metrics.
func badInputConfig(dir, marker, rate string) string {
	cfg := strings.Replace(receiverConfig(dir, `{
  app: {allowPush: true, triggerOnly: true, webhookPaths: ['/hook'], shell: {command: '/bin/sh'}, commands: [
    {id: 'mark', always: true, change: 'echo x >> `+marker+`; echo answered', onChange: ['etcha:webhookBody']}]},
  watcher: {triggerOnly: true, eventsReceive: ['shell', 'push'], commands: [{id: 'w', always: true, change: 'echo x >> `+marker+`'}]},
}`), "stateDir:", "systemMetricsKey: 'k', stateDir:", 1)
	return strings.Replace(cfg, "listenAddress: '127.0.0.1:0'", "listenAddress: '127.0.0.1:0', rateLimitRate: '"+rate+"'", 1)
}

// TestRunBadInput sends every endpoint an unknown path, a wrong method, an
// oversized body, a slow (half-sent) request and a forged token. None
// runs a command, none stops the daemon: a good webhook answers after.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	r := startRunWith(t, badInputConfig(dir, marker, ""), func(o *RunOptions) {
		o.Listen = func(lo *listen.Options) { lo.ReadTimeout = 500 * time.Millisecond }
	})
	big := bytes.Repeat([]byte("x"), listen.MaxBodyBytes+1)
	forged := signedBy(t, otherPrivateKey(t), `{run: [{id: 'f', always: true, change: 'echo x >> `+marker+`'}]}`)
	good := signedPattern(t, `{run: [{id: 'mark', always: true, change: 'echo x >> `+marker+`; echo pushed', onChange: ['etcha:webhookBody']}]}`)
	expired := signAt(t, writeFile(t, dir, "exp.jsonnet", `{expiresIn: '1s', run: [{id: 'x', always: true, change: 'echo x >> `+marker+`'}]}`), timeNowMinus(5))
	now := time.Now().Truncate(time.Second)
	shellTok := func(key string, iat, exp time.Time) string {
		k, err := token.ParsePrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		s, err := token.Sign(&token.Claims{Audience: []string{ShellAudience}, Subject: "app", IssuedAt: iat, ExpiresAt: exp, Pattern: shellPattern}, k)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s
	}
	shellForged := shellTok(otherPrivateKey(t), now, now.Add(5*time.Second))
	shellExpired := shellTok(testPrivateKey, now.Add(-time.Minute), now.Add(-55*time.Second))
	shellLong := shellTok(testPrivateKey, now, now.Add(time.Minute))
	shellNone := "Bearer " + algNone(t, shellTok(testPrivateKey, now, now.Add(5*time.Second))[len("Bearer "):])
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		header             []string
		want               int
	}{
		{"unknown path", "POST", "/etcha/v1/nothing", nil, nil, 404},
		{"unknown webhook", "GET", "/hook2", nil, nil, 404},
		{"unknown push source", "POST", listen.PushPath + "nope", []byte("x"), nil, 404},
		{"unknown shell source", "GET", listen.ShellPath + "nope", nil, []string{"Authorization", shellForged}, 404},
		{"unknown metrics path", "GET", MetricsPath + "/x?key=k", nil, nil, 404},
		{"push: wrong method", "GET", listen.PushPath + "app", nil, nil, 405},
		{"shell: wrong method", "DELETE", listen.ShellPath + "app", nil, nil, 405},
		{"metrics: wrong method", "POST", MetricsPath + "?key=k", nil, nil, 405},
		{"push: oversized", "POST", listen.PushPath + "app", big, nil, 413},
		{"webhook: oversized", "POST", "/hook", big, nil, 413},
		{"shell: oversized", "GET", listen.ShellPath + "app", big, []string{"Authorization", shellForged}, 413},
		{"shell input: oversized", "POST", listen.ShellPath + "app?session=x", big, []string{"Authorization", shellForged}, 413},
		{"metrics: oversized", "GET", MetricsPath + "?key=k", big, nil, 413},
		{"push: forged", "POST", listen.PushPath + "app", []byte(forged), nil, 404},
		{"push: expired", "POST", listen.PushPath + "app", []byte(expired), nil, 404},
		{"push: alg none", "POST", listen.PushPath + "app", []byte(algNone(t, good)), nil, 404},
		{"push: garbage", "POST", listen.PushPath + "app", []byte("not a jwt"), nil, 404},
		{"shell: pattern JWT", "GET", listen.ShellPath + "app", nil, []string{"Authorization", "Bearer " + good}, 404},
		{"shell: forged", "GET", listen.ShellPath + "app", nil, []string{"Authorization", shellForged}, 404},
		{"shell: expired", "GET", listen.ShellPath + "app", nil, []string{"Authorization", shellExpired}, 404},
		{"shell: expiry over 5s", "GET", listen.ShellPath + "app", nil, []string{"Authorization", shellLong}, 404},
		{"shell: alg none", "GET", listen.ShellPath + "app", nil, []string{"Authorization", shellNone}, 404},
		{"shell input: forged", "POST", listen.ShellPath + "app?session=x", []byte("touch " + marker), []string{"Authorization", shellForged}, 404},
		{"shell input: expired", "POST", listen.ShellPath + "app?session=x", []byte("touch " + marker), []string{"Authorization", shellExpired}, 404},
		{"shell input: expiry over 5s", "POST", listen.ShellPath + "app?session=x", []byte("touch " + marker), []string{"Authorization", shellLong}, 404},
		{"shell input: alg none", "POST", listen.ShellPath + "app?session=x", []byte("touch " + marker), []string{"Authorization", shellNone}, 404},
		{"metrics: wrong key", "GET", MetricsPath + "?key=K", nil, nil, 401},
		{"metrics: no key", "GET", MetricsPath, nil, nil, 401},
	} {
		if code, _, _ := r.do(t, tc.method, tc.path, bytes.NewReader(tc.body), tc.header...); code != tc.want {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.path, code, tc.want)
		}
	}
	// Slow clients: half a header, and a header with half its body, on
	// every endpoint; the server drops each within its read timeout.
	for _, req := range []string{"POST /hook", "POST " + listen.PushPath + "app", "GET " + listen.ShellPath + "app",
		"POST " + listen.ShellPath + "app?session=x", "GET " + MetricsPath} {
		for _, send := range []string{
			req + " HTTP/1.1\r\nHost: x\r\nContent-Le",
			req + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
		} {
			slowRequest(t, r.addr, send)
		}
	}
	if fileExists(marker) {
		t.Fatalf("bad input ran a command; log:\n%s", r.log.String())
	}
	if n, _ := r.log.count("shell started"); n != 0 {
		t.Fatalf("bad input started a shell; log:\n%s", r.log.String())
	}
	// The daemon still serves: a good push (app is triggerOnly: its
	// pattern is replaced and nothing of it runs; its push event runs
	// watcher, which writes the marker), then a good webhook that runs
	// the pushed pattern.
	if code, body, _ := r.do(t, http.MethodPost, listen.PushPath+"app", strings.NewReader(good)); code != 200 || body != `{"changed":[],"removed":[],"exit":false}`+"\n" {
		t.Fatalf("good push after the bad input = %d %q", code, body)
	}
	waitFile(t, r, marker)
	if code, body, _ := r.do(t, http.MethodPost, "/hook", nil); code != 200 || body != "pushed" {
		t.Fatalf("good webhook after the bad input = %d %q", code, body)
	}
}

// algNone returns tok with its header replaced by {"alg":"none"} and its
// signature removed: an unsigned token with the same claims.
func algNone(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
}

// slowRequest sends text on a raw TLS connection and expects the server
// to close it, without a 200, well within waitLong.
func slowRequest(t *testing.T, addr, text string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	if _, err := io.WriteString(conn, text); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(waitLong))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Errorf("%q: the server kept the connection: %v", text, err)
	}
	if d := time.Since(began); d > waitLong/2 || strings.Contains(string(got), " 200 ") {
		t.Errorf("%q: closed after %v with %q", text, d, got)
	}
}

// signedBy signs pattern text with key.
func signedBy(t *testing.T, key, text string) string {
	t.Helper()
	app, _ := newApp(t, `{build: {signingKey: '`+key+`'}}`)
	app.Now = nil
	dest := filepath.Join(t.TempDir(), "p.jwt")
	if err := app.Build(t.Context(), BuildOptions{Pattern: writeFile(t, t.TempDir(), "p.jsonnet", text), Dest: dest}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(readFile(t, dest))
}

// TestRunRateLimit: many parallel clients on every endpoint beyond
// httpServer.rateLimitRate get 429 with Retry-After; at most the burst
// runs anything; the daemon keeps running.
func TestRunRateLimit(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	r := startRun(t, badInputConfig(dir, marker, "3/h"))
	paths := []struct{ method, path string }{
		{"POST", "/hook"}, {"POST", listen.PushPath + "app"}, {"GET", listen.ShellPath + "app"},
		{"POST", listen.ShellPath + "app?session=x"}, {"GET", MetricsPath + "?key=k"},
	}
	const clients = 30
	codes := make([]int, clients)
	retry := make([]string, clients)
	var wg sync.WaitGroup
	c := r.client(t)
	for i := range clients {
		wg.Go(func() {
			p := paths[i%len(paths)]
			req, _ := http.NewRequest(p.method, "https://"+r.addr+p.path, strings.NewReader("x"))
			resp, err := c.Do(req)
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
	for i, code := range codes {
		if code == http.StatusTooManyRequests {
			limited++
			if n, err := strconv.Atoi(retry[i]); err != nil || n < 1 {
				t.Errorf("429 with Retry-After %q, want whole seconds ≥ 1", retry[i])
			}
		}
	}
	if limited != clients-3 {
		t.Errorf("%d of %d requests limited, want %d; codes %v", limited, clients, clients-3, codes)
	}
	if n := strings.Count(fileText(t, marker), "x"); n > 3 {
		t.Errorf("%d commands ran, want at most the burst of 3", n)
	}
	r.log.waitLines(t, 1, "rate limited", "retryAfter=")
	// The bucket is per client IP: another loopback address still gets
	// a good push and the metrics through, while 127.0.0.1 stays limited.
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
	}
	defer tr.CloseIdleConnections()
	other := &http.Client{Transport: tr, Timeout: waitLong}
	good := signedPattern(t, `{run: [{id: 'g', always: true, change: 'true'}]}`)
	for _, req := range []struct{ method, path, body string }{
		{"POST", listen.PushPath + "app", good}, {"GET", MetricsPath + "?key=k", ""},
	} {
		resp, err := other.Do(must(http.NewRequest(req.method, "https://"+r.addr+req.path, strings.NewReader(req.body))))
		if err != nil {
			t.Fatalf("%s from 127.0.0.2: %v", req.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s %s from 127.0.0.2 = %d, want 200", req.method, req.path, resp.StatusCode)
		}
	}
	if code, _, _ := r.do(t, http.MethodGet, MetricsPath+"?key=k", nil); code != http.StatusTooManyRequests {
		t.Errorf("metrics from 127.0.0.1 after the flood = %d, want 429", code)
	}
}

// must returns v, panicking on err (for http.NewRequest with constant
// arguments).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
