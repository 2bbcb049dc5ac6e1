package etcha

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/source"
)

// logPattern writes a pattern whose one command appends word to
// dir/<source>.log on every run (the source is the automatic var).
func logPattern(t testing.TB, dir, word string) string {
	t.Helper()
	return writeFile(t, dir, word+".jsonnet", `{run: [{id: '`+word+`', always: true,
  change: 'echo `+word+` >> `+dir+`/' + std.native('getConfig')().vars.source + '.log'}]}`)
}

// signAt builds pattern with the test key and iat at.
func signAt(t testing.TB, pattern string, at time.Time) string {
	t.Helper()
	app, _ := newApp(t, baseConfig)
	app.Now = func() time.Time { return at }
	dest := filepath.Join(t.TempDir(), "p.jwt")
	if err := app.Build(context.Background(), BuildOptions{Pattern: pattern, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(readFile(t, dest))
}

// TestRunEtcdWatch: every value written to a watched etcd:/// key reaches
// the source within its watch event, without runFrequency: a new valid
// pattern runs; the same one again, one signed by another key, garbage,
// an empty value, an expired one and an older one (a replay) run nothing;
// a delete is logged and keeps the pattern; a newer one runs after all
// that. Each value's outcome is waited for in the log before the next.
func TestRunEtcdWatch(t *testing.T) {
	dir := t.TempDir()
	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	put := func(v string) {
		t.Helper()
		if _, err := cli.Put(context.Background(), "/patterns/app", v); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	v0 := signAt(t, logPattern(t, dir, "v0"), base)
	v1 := signAt(t, logPattern(t, dir, "v1"), base.Add(time.Minute))
	v2 := signAt(t, logPattern(t, dir, "v2"), base.Add(2*time.Minute))
	expired := signAt(t, writeFile(t, dir, "exp.jsonnet", `{expiresIn: '1m', run: [{id: 'x', always: true, change: 'echo x >> `+dir+`/app.log'}]}`),
		base.Add(3*time.Minute))

	other, _ := newApp(t, `{build: {signingKey: '`+otherPrivateKey(t)+`'}}`)
	forgedPath := filepath.Join(dir, "forged.jwt")
	if err := other.Build(context.Background(), BuildOptions{Pattern: logPattern(t, dir, "forged"), Dest: forgedPath}); err != nil {
		t.Fatal(err)
	}

	r := startRun(t, receiverConfig(dir, `{app: {pullPaths: ['etcd:///patterns/app']}}`), "ETCD_ENDPOINTS="+etcd.Endpoint())
	r.log.waitLines(t, 1, "no valid targets for source app")
	r.log.waitLines(t, 1, "Watched etcd key is absent") // the watch's first read: it is watching
	logFile := filepath.Join(dir, "app.log")

	put(v1)
	r.log.waitLines(t, 1, "msg=pull", "status=ran", "where=etcd:///patterns/app")
	if got := fileText(t, logFile); got != "v1\n" {
		t.Fatalf("after the first put: log %q, want v1", got)
	}
	put(v1)
	r.log.waitLines(t, 1, "msg=pull", "status=unchanged")
	refused := 0
	for _, v := range []string{readFile(t, forgedPath), "not a jwt", "", "\x00\xff\x01", expired, v0} {
		put(v)
		refused++
		r.log.waitLines(t, refused, "msg=pull", "status=refused")
	}
	if _, err := cli.Delete(context.Background(), "/patterns/app"); err != nil {
		t.Fatal(err)
	}
	r.log.waitLines(t, 2, "Watched etcd key is absent") // the initial read, then the delete
	if got := fileText(t, logFile); got != "v1\n" {
		t.Fatalf("after refused values and a delete: log %q, want only v1's run", got)
	}
	if cur := readFile(t, source.StatePath(filepath.Join(dir, "state"), "app")); strings.TrimSpace(cur) != v1 {
		t.Fatal("the state file is not v1 after refusals and a delete")
	}
	put(v2)
	r.log.waitLines(t, 2, "msg=pull", "status=ran")
	if got := fileText(t, logFile); got != "v1\nv2\n" {
		t.Fatalf("after a newer put: log %q, want v1 then v2", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"reason=signature", "reason=malformed", "reason=expired", "reason=rollback"} {
		if !strings.Contains(r.log.String(), reason) {
			t.Errorf("the log does not name the refusal %s:\n%s", reason, r.log.String())
		}
	}
}

// TestRunEtcdTutorial is the §4.4 tutorial by etcd: each put of a JWT on
// the watched key runs it within its watch event; the second pattern
// removes the first one's commands in reverse order; putting it again
// changes nothing.
func TestRunEtcdTutorial(t *testing.T) {
	dir := t.TempDir()
	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	f1, f2, f3, p1, p2 := tutorialPatterns(t, dir)
	j1, j2 := signAt(t, p1, timeNowMinus(2)), signAt(t, p2, timeNowMinus(1))
	r := startRun(t, receiverConfig(dir, `{app: {pullPaths: ['etcd:///patterns/app']}}`), "ETCD_ENDPOINTS="+etcd.Endpoint())
	for i, step := range []struct {
		jwt, status, ran string
		files            [3]string
	}{
		{j1, "status=ran", "changed=2 removed=0", [3]string{"1\n", "1\n", ""}},
		{j2, "status=ran", "changed=1 removed=2", [3]string{"", "", "3\n"}},
		{j2, "status=unchanged", "", [3]string{"", "", "3\n"}},
	} {
		n, _ := r.log.count("msg=pull", step.status)
		if _, err := cli.Put(context.Background(), "/patterns/app", step.jwt); err != nil {
			t.Fatal(err)
		}
		r.log.waitLines(t, n+1, "msg=pull", step.status)
		if step.ran != "" {
			r.log.waitLines(t, 1, "Ran source app", step.ran)
		}
		if got := [3]string{fileText(t, f1), fileText(t, f2), fileText(t, f3)}; got != step.files {
			t.Fatalf("put %d: files f1, f2, f3 = %q, want %q", i+1, got, step.files)
		}
	}
	if !strings.Contains(r.log.String(), `msg="Removed copy file"`) {
		t.Fatalf("log:\n%s", r.log.String())
	}
}

// TestRunOncePulls: run -o pulls from a file (after a missing one), over
// HTTPS with #skipVerify, and from etcd; an https pull of an untrusted
// certificate without skipVerify and a failing static command make -o
// fail and name those sources; with httpClient.tlsSkipVerify every
// source succeeds.
func TestRunOncePulls(t *testing.T) {
	dir := t.TempDir()
	jwt := signAt(t, logPattern(t, dir, "pulled"), time.Now().Add(-time.Minute))
	jwtFile := writeFile(t, dir, "app.jwt", jwt+"\n")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(jwt)) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake of "strict"
	srv.StartTLS()
	defer srv.Close()
	etcd := etcdtest.Start(t)
	if _, err := etcd.Client(t).Put(context.Background(), "/p/e", jwt); err != nil {
		t.Fatal(err)
	}
	sources := `{
    file: {pullPaths: ['` + filepath.Join(dir, "missing.jwt") + `', '` + jwtFile + `']},
    https: {pullPaths: ['` + srv.URL + `/x.jwt#skipVerify']},
    strict: {pullPaths: ['` + srv.URL + `/x.jwt']},
    etcd: {pullPaths: ['etcd:///p/e']},
    fails: {commands: [{id: 'fail', always: true, change: 'false'}]},
  }`
	runOnce := func(overrides ...string) (string, error) {
		app, _ := newApp(t, receiverConfig(dir, sources), overrides...)
		logs := newLogSink()
		app.Now, app.Env = nil, []string{"ETCD_ENDPOINTS=" + etcd.Endpoint()}
		app.Logger = slogTo(logs)
		err := app.Run(context.Background(), RunOptions{Once: true})
		return logs.String(), err
	}
	logs, err := runOnce()
	if err == nil || !strings.Contains(err.Error(), "failed: fails, strict") {
		t.Fatalf("run -o: %v, want the failed sources fails and strict named", err)
	}
	if !strings.Contains(logs, "no valid targets for source strict") || !strings.Contains(logs, "not trusted") {
		t.Fatalf("the log does not say why strict failed:\n%s", logs)
	}
	for _, s := range []string{"file", "https", "etcd"} {
		if got := fileText(t, filepath.Join(dir, s+".log")); got != "pulled\n" {
			t.Fatalf("source %s: log %q, want one run of the pulled pattern", s, got)
		}
	}
	if fileText(t, filepath.Join(dir, "strict.log")) != "" {
		t.Fatal("a pull refused for its certificate ran")
	}
	os.RemoveAll(filepath.Join(dir, "state"))
	sources = strings.Replace(sources, "'false'", "'true'", 1)
	if logs, err := runOnce("httpClient_tlsSkipVerify=true"); err != nil {
		t.Fatalf("run -o with tlsSkipVerify: %v\n%s", err, logs)
	}
	if got := fileText(t, filepath.Join(dir, "strict.log")); got != "pulled\n" {
		t.Fatalf("strict with httpClient.tlsSkipVerify: log %q", got)
	}
	if got := fileText(t, filepath.Join(dir, "file.log")); got != "pulled\npulled\n" {
		t.Fatalf("file on the second run -o: log %q, want a second run", got)
	}
}
