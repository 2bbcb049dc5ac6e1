package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// signer makes pattern JWTs signed with a fresh key; each has a later iat
// than the one before.
type signer struct {
	tb   testing.TB
	priv token.PrivateKey
	pub  string
	iat  time.Time
}

func newSigner(tb testing.TB) *signer {
	tb.Helper()
	priv, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		tb.Fatal(err)
	}
	return &signer{tb: tb, priv: priv, pub: pub.String(), iat: time.Now().Add(-time.Hour).Truncate(time.Second)}
}

// sign returns a JWT whose pattern is jsonnet, issued by "tests".
func (s *signer) sign(jsonnet string) string {
	s.tb.Helper()
	return s.signAs("tests", jsonnet)
}

func (s *signer) signAs(iss, jsonnet string) string {
	s.tb.Helper()
	s.iat = s.iat.Add(time.Second)
	jwt, err := token.Sign(&token.Claims{
		IssuedAt: s.iat, ID: fmt.Sprintf("jti-%d", s.iat.Unix()), Issuer: iss,
		Pattern: token.Pattern{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": jsonnet}},
	}, s.priv)
	if err != nil {
		s.tb.Fatal(err)
	}
	return jwt
}

// writePattern is a pattern with one command that writes value to path;
// with reload it fires etcha:reload.
func writePattern(path, value string, reload bool) string {
	on := ""
	if reload {
		on = ", onChange: ['etcha:reload']"
	}
	return fmt.Sprintf(`{run: [{id: 'write %s', always: true, change: 'printf %%s %s > %s'%s}]}`, value, value, path, on)
}

// patternWorld is a directory the child lists (root): the target below it
// (root/target) and the directory pattern commands write to (root/out).
type patternWorld struct {
	root, target, out string
}

func newPatternWorld(t *testing.T) patternWorld {
	root := t.TempDir()
	w := patternWorld{root: root, target: filepath.Join(root, "target"), out: filepath.Join(root, "out")}
	if err := os.Mkdir(w.out, 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

func txn(t testing.TB, s *etcdtest.Server, ops ...clientv3.Op) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := s.Client(t).Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatalf("txn: %v", err)
	}
}

// noSignalIn fails if a skipped line is a signal the child saw.
func noSignalIn(t *testing.T, skipped []string) {
	t.Helper()
	for _, l := range skipped {
		if strings.HasPrefix(l, "HUP") {
			t.Fatalf("an extra signal reached the child: %q (skipped %q)", l, skipped)
		}
	}
}

// TestPatternsAndFilesOneSignal: the child starts once the files are
// written and the pattern has run; a transaction changing a file and the
// pattern gives one signal, after both; a pattern whose commands fire
// etcha:reload gives one signal alone; one that fires nothing gives none.
func TestPatternsAndFilesOneSignal(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	web := filepath.Join(w.out, "web")
	put(t, s, "/app/files/a", "1", "/app/patterns/web", k.sign(writePattern(web, "v1", false)))
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"-t", w.target, "-s", "HUP"}, childArgs(w.root, "serve")...)...)
	if got, _ := r.out.next(t, "ready"); got != "ready out/web=v1,target/a=1" {
		t.Fatalf("child started with %q, want the file written and the pattern run", got)
	}

	// The reload signals of the first 2 s after the start are held back and
	// merged, which would hide the order; this one ends that period.
	put(t, s, "/app/files/warm-up", "1")
	r.out.next(t, "HUP")

	txn(t, s, clientv3.OpPut("/app/files/a", "2"), clientv3.OpPut("/app/patterns/web", k.sign(writePattern(web, "v2", false))))
	if got, _ := r.out.next(t, "HUP"); got != "HUP out/web=v2,target/a=2,target/warm-up=1" {
		t.Fatalf("after one transaction the child saw %q", got)
	}
	put(t, s, "/app/patterns/web", k.sign(writePattern(web, "v3", true)))
	got, skipped := r.out.next(t, "HUP")
	noSignalIn(t, skipped)
	if got != "HUP out/web=v3,target/a=2,target/warm-up=1" {
		t.Fatalf("after etcha:reload the child saw %q", got)
	}
	put(t, s, "/app/patterns/web", k.sign(writePattern(web, "v4", false))) // no reload: no signal
	r.errs.containing(t, "write v4")
	put(t, s, "/app/files/a", "3")
	got, skipped = r.out.next(t, "HUP")
	noSignalIn(t, skipped)
	if got != "HUP out/web=v4,target/a=3,target/warm-up=1" {
		t.Fatalf("after a pattern without reload and a file change the child saw %q", got)
	}
}

// TestFailingPatternHoldsNothingBack: a pattern whose command fails is
// logged and counted; the files, the next pattern and the signal go
// through; a forged pattern (signed by another key) never runs and is
// counted as refused.
func TestFailingPatternHoldsNothingBack(t *testing.T) {
	s := etcdtest.Start(t)
	k, forger := newSigner(t), newSigner(t)
	w := newPatternWorld(t)
	good := filepath.Join(w.out, "good")
	put(t, s, "/app/files/a", "1")
	addr := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"-t", w.target, "-s", "HUP", "--listen-http", addr}, childArgs(w.root, "serve")...)...)
	r.out.next(t, "ready")

	txn(t, s, clientv3.OpPut("/app/files/a", "2"),
		clientv3.OpPut("/app/patterns/a-bad", k.sign(`{run: [{id: 'fail', always: true, change: 'exit 3'}]}`)),
		clientv3.OpPut("/app/patterns/b-good", k.sign(writePattern(good, "ok", true))))
	if got, _ := r.out.next(t, "HUP"); got != "HUP out/good=ok,target/a=2" {
		t.Fatalf("with a failing pattern the child saw %q", got)
	}

	forged := filepath.Join(w.out, "forged")
	put(t, s, "/app/patterns/b-good", forger.sign(writePattern(forged, "pwned", true)))
	r.errs.containing(t, "Pattern refused")
	waitMetrics(t, "http://"+addr+"/metrics",
		`dispenser_pattern_runs_total{pattern="a-bad"} 1`,
		`dispenser_pattern_failures_total{pattern="a-bad"} 1`,
		`dispenser_pattern_runs_total{pattern="b-good"} 1`,
		`dispenser_pattern_refused_total{pattern="b-good",reason="signature"} 1`,
		`dispenser_pattern_accepted_iat_seconds{pattern="b-good"}`,
	)
	if _, err := os.Stat(forged); !os.IsNotExist(err) {
		t.Fatalf("the forged pattern ran: stat %s: %v", forged, err)
	}
}

// TestDeletedPatternKeyKeepsPattern: deleting a pattern key runs nothing
// and the pattern stays current: putting the same JWT back is "no
// changes" and does not run it again.
func TestDeletedPatternKeyKeepsPattern(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	log := filepath.Join(w.out, "log")
	jwt := k.sign(`{run: [{id: 'count', always: true, change: 'echo ran >> ` + log + `', remove: 'echo removed >> ` + log + `'}]}`)
	put(t, s, "/app/patterns/web", jwt)
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"-t", w.target}, childArgs(w.root, "serve")...)...)
	r.out.next(t, "ready")

	txn(t, s, clientv3.OpDelete("/app/patterns/web"))
	r.errs.containing(t, "pattern key deleted")
	put(t, s, "/app/patterns/web", jwt)
	r.errs.containing(t, "No changes for web")
	if b, err := os.ReadFile(log); err != nil || string(b) != "ran\n" {
		t.Fatalf("log = %q, %v; want one run and no removal", b, err)
	}
}

// TestStopDuringPatternRun: a stop while a pattern runs lets the run
// finish within --kill-timeout; a run that takes longer is killed then
// (its command never completes), and dispenser exits promptly either way.
func TestStopDuringPatternRun(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	for _, tc := range []struct {
		name, killTimeout, script string
		finishes                  bool
	}{
		{"finishes", "30s", "sleep 2; echo done > " + filepath.Join(w.out, "finishes"), true},
		{"killed", "1s", "sleep 60; echo done > " + filepath.Join(w.out, "killed"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, s, "--prefix=/app/files", "--patterns=/app/"+tc.name, "--verify-key", k.pub,
				"-t", w.target, "--kill-timeout", tc.killTimeout) // no child: only the pattern run is timed
			r.errs.containing(t, "target in sync")
			put(t, s, "/app/"+tc.name+"/slow", k.sign(`{run: [{id: 'slow', always: true, change: '`+tc.script+`'}]}`))
			r.errs.containing(t, "Updating config for slow")
			began := time.Now()
			r.stop()
			if err := r.wait(t); err != nil {
				t.Fatalf("run: %v", err)
			}
			took := time.Since(began)
			_, err := os.Stat(filepath.Join(w.out, tc.name))
			if ran := err == nil; ran != tc.finishes {
				t.Fatalf("the run in progress finished: %v, want %v (took %v); log:\n%s", ran, tc.finishes, took, r.errs.String())
			}
			if took > 20*time.Second {
				t.Fatalf("dispenser took %v to stop; --kill-timeout is %s", took, tc.killTimeout)
			}
			t.Logf("stopped in %v", took)
		})
	}
}

// TestPatternStateAcrossRestarts: with --state-dir a restart restores the
// last accepted pattern, so a pattern changed while dispenser was down is
// diffed against it (the dropped command's remove runs); without it the
// current pattern just runs (no removal). The verify key comes by each of
// --verify-key, DISPENSER_VERIFY_KEYS and DISPENSER_VERIFY_KEYS_FILE.
func TestPatternStateAcrossRestarts(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	log := filepath.Join(w.out, "log")
	cmd := func(id string) string {
		return fmt.Sprintf(`{run: [{id: '%s', always: true, change: 'echo %s >> %s', remove: 'echo removed-%s >> %s'}]}`, id, id, log, id, log)
	}
	state := filepath.Join(t.TempDir(), "state")
	keyFile := filepath.Join(t.TempDir(), "keys")
	_, other, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(other.String()+"\n"+k.pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The key comes by flag, by DISPENSER_VERIFY_KEYS or by
	// DISPENSER_VERIFY_KEYS_FILE (each also with a key that did not sign).
	byFlag := func() []string { return []string{"--verify-key=" + k.pub} }
	byEnv := func() []string { t.Setenv("DISPENSER_VERIFY_KEYS", other.String()+", "+k.pub); return nil }
	byFile := func() []string { t.Setenv("DISPENSER_VERIFY_KEYS_FILE", keyFile); return nil }
	once := func(keys func() []string, args ...string) {
		t.Helper()
		t.Setenv("DISPENSER_VERIFY_KEYS", "")
		t.Setenv("DISPENSER_VERIFY_KEYS_FILE", "")
		flags := append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "-t", w.target, "--once"}, keys()...)
		r := start(t, s, append(flags, args...)...)
		if err := r.wait(t); err != nil {
			t.Fatalf("dispenser --once: %v; log:\n%s", err, r.errs.String())
		}
	}
	wantLog := func(want string) {
		t.Helper()
		if b, _ := os.ReadFile(log); string(b) != want {
			t.Fatalf("log = %q, want %q", b, want)
		}
	}
	put(t, s, "/app/patterns/web", k.sign(cmd("a")))
	once(byFlag, "--state-dir", state)
	wantLog("a\n")
	put(t, s, "/app/patterns/web", k.sign(cmd("b"))) // while dispenser is down
	once(byEnv, "--state-dir", state)
	wantLog("a\nremoved-a\nb\n")
	once(byFile, "--state-dir", state) // unchanged: the restored pattern runs once
	wantLog("a\nremoved-a\nb\nb\n")
	put(t, s, "/app/patterns/web", k.sign(cmd("c")))
	once(byFlag) // no state: c runs, b's removal cannot
	wantLog("a\nremoved-a\nb\nb\nc\n")
}

// TestEtchaConfigApplies: --etcha-config's exec (with its env), vars,
// run.jwtRule and run.verifyKeys apply to every pattern, and
// sources.<name> (checkOnly, vars) to the pattern of that name.
func TestEtchaConfigApplies(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	cfg := filepath.Join(t.TempDir(), "etcha.jsonnet")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{
  exec: {command: '/bin/sh -c', env: {OUT: '%s'}},
  vars: {word: 'plain'},
  run: {jwtRule: 'iss == "tests"', verifyKeys: ['%s']},
  sources: {web: {checkOnly: true, vars: {word: 'web'}}},
}`, w.out, k.pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	write := `{run: [{id: 'write', check: 'false', change: 'echo ' + std.native('getConfig')().vars.word + ' > "$OUT/' + std.native('getConfig')().vars.source + '"'}]}`
	put(t, s, "/app/patterns/app", k.sign(write), "/app/patterns/web", k.sign(write),
		"/app/patterns/other", k.signAs("someone else", write))
	r := start(t, s, "--prefix=/app/files", "--patterns=/app/patterns", "-t", w.target, "--once", "--etcha-config", cfg)
	// --once fails when a pattern was refused (an init container must not
	// pass over it), after running the others.
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "1 pattern(s) failed or were refused") {
		t.Fatalf("dispenser --once with a refused pattern: %v, want the refusal as an error; log:\n%s", err, r.errs.String())
	}
	if got := contents(w.out); got != "app=plain\n" {
		t.Fatalf("pattern output %q, want only app=plain (web is checkOnly, other fails the jwtRule)", got)
	}
	r.errs.containing(t, "reason=rule")
}

// TestPatternUsageErrors: --patterns never runs unsigned; the pattern
// flags are checked before anything starts.
func TestPatternUsageErrors(t *testing.T) {
	t.Setenv("DISPENSER_VERIFY_KEYS", "")
	t.Setenv("DISPENSER_VERIFY_KEYS_FILE", "")
	dir := t.TempDir()
	_, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  string // DISPENSER_VERIFY_KEYS
		want string
	}{
		{[]string{"-p", "/x/files", "-t", dir, "--patterns", "/x/patterns"}, "", "--patterns needs a key"},
		{[]string{"-p", "/x/files", "-t", dir, "--patterns", "/x/patterns"}, pub.String() + ",junk", "DISPENSER_VERIFY_KEYS (key 2)"},
		{[]string{"-p", "/x/files", "-t", dir, "--patterns", "/x/patterns", "--verify-key", "nonsense"}, "", "--verify-key (key 1)"},
		{[]string{"-p", "/x", "-t", dir, "--patterns", "/x/patterns", "--verify-key", pub.String()}, "", "overlap"},
		{[]string{"-p", "/x", "-t", dir, "--verify-key", pub.String()}, "", "add --patterns"},
		{[]string{"-p", "/x/files", "-t", dir, "--patterns", "/x/patterns", "--verify-key", pub.String(), "--etcha-config", filepath.Join(dir, "none.jsonnet")}, "", "--etcha-config"},
	} {
		t.Run(strings.Join(tc.args, " ")+" "+tc.env, func(t *testing.T) {
			t.Setenv("DISPENSER_VERIFY_KEYS", tc.env)
			var stderr bytes.Buffer
			code := report(&stderr, run(context.Background(), tc.args, &bytes.Buffer{}, &stderr))
			first := strings.SplitN(stderr.String(), "\n", 2)[0]
			if code != 2 || !strings.Contains(first, tc.want) {
				t.Fatalf("exit %d, first line %q; want 2 and %q", code, first, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a usage error touched the target: %v", entries)
	}
}

// TestPatternKeyNotUTF8: anyone who may write the pattern prefix can put a
// key whose name is not UTF-8 (no signing key needed). It is logged and
// ignored: dispenser keeps running, the other patterns run, and /metrics,
// whose labels must be UTF-8, keeps answering.
func TestPatternKeyNotUTF8(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	put(t, s, "/app/patterns/web\xff", "not a jwt")
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"-t", w.target, "-s", "HUP"}, childArgs(w.root, "serve")...)...)
	r.errs.containing(t, "its name is not valid UTF-8")
	r.out.next(t, "ready")
	txn(t, s, clientv3.OpPut("/app/patterns/web\xfe", "not a jwt either"),
		clientv3.OpPut("/app/patterns/ok", k.sign(`{run: [{id: 'mark', always: true, change: 'touch `+filepath.Join(w.out, "ok")+`', onChange: ['etcha:reload']}]}`)))
	if got, _ := r.out.next(t, "HUP"); got == "" {
		t.Fatal("no reload after a valid pattern beside a key that is not UTF-8")
	}
	if _, err := os.Stat(filepath.Join(w.out, "ok")); err != nil {
		t.Fatalf("the valid pattern did not run: %v", err)
	}
}

// TestRestoredPatternRunsWhenEtcdValueRefused: at start every pattern runs
// once. When the key now holds a JWT that is refused (here signed by
// another key), the pattern restored from --state-dir is the one that
// runs, and --once reports the refusal.
func TestRestoredPatternRunsWhenEtcdValueRefused(t *testing.T) {
	s := etcdtest.Start(t)
	k, other := newSigner(t), newSigner(t)
	w := newPatternWorld(t)
	state := filepath.Join(w.root, "state")
	log := filepath.Join(w.out, "log")
	put(t, s, "/app/patterns/web", k.sign(`{run: [{id: 'count', always: true, change: 'echo ran >> `+log+`'}]}`))
	args := []string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub, "--state-dir", state,
		"-t", w.target, "--once"}
	if err := start(t, s, args...).wait(t); err != nil {
		t.Fatalf("first --once: %v", err)
	}
	put(t, s, "/app/patterns/web", other.sign(`{run: [{id: 'forged', always: true, change: 'echo forged >> `+log+`'}]}`))
	r := start(t, s, args...)
	if err := r.wait(t); err == nil {
		t.Fatalf("second --once: no error for a refused pattern; log:\n%s", r.errs.String())
	}
	if b, err := os.ReadFile(log); err != nil || string(b) != "ran\nran\n" {
		t.Fatalf("log = %q, %v; want the restored pattern to run at each start and the forged one never", b, err)
	}
}

// TestPatternsWithReap: as PID 1 (here --reap) dispenser reaps orphans, but
// the exit status of every pattern command stays with the run that waits
// for it: 40 commands that succeed all succeed.
func TestPatternsWithReap(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	var cmds []string
	for i := range 40 {
		cmds = append(cmds, fmt.Sprintf(`{id: 'c%d', always: true, change: 'true'}`, i))
	}
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"--reap", "-t", w.target}, childArgs(w.root, "serve")...)...)
	r.out.next(t, "ready") // the reaper runs while the child does
	put(t, s, "/app/patterns/many", k.sign(`{run: [`+strings.Join(cmds, ", ")+`]}`))
	line := r.errs.containing(t, `msg="Ran source many"`)
	if !strings.Contains(line, "changed=40") || !strings.Contains(line, "err=<nil>") {
		t.Fatalf("with --reap the pattern ran as %q, want 40 changes and no error; log:\n%s", line, r.errs.String())
	}
}
