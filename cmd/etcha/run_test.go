package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// cli runs etcha in process and returns its exit code and output.
func cli(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, env, strings.NewReader(""), &out, &errOut)
	code = report(&errOut, err)
	return code, out.String(), errOut.String()
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// setup generates keys with the CLI and writes a config that signs and
// verifies with them and runs scripts with /bin/sh.
func setup(t *testing.T) (dir, config string) {
	t.Helper()
	code, out, stderr := cli(t, nil, "generate-keys")
	if code != 0 {
		t.Fatalf("generate-keys: exit %d: %s", code, stderr)
	}
	var keys struct{ PrivateKey, PublicKey string }
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("generate-keys printed %q: %v", out, err)
	}
	dir = t.TempDir()
	config = write(t, dir, "etcha.jsonnet", fmt.Sprintf(`{
  build: {signingKey: %q},
  run: {verifyKeys: [%q]},
  exec: {command: '/bin/sh -c'},
  sources: {audit: {checkOnly: true}},
}`, keys.PrivateKey, keys.PublicKey))
	return dir, config
}

func TestRoundTrip(t *testing.T) {
	dir, cfg := setup(t)
	trace := filepath.Join(dir, "trace")
	write(t, dir, "lib/step.libsonnet", fmt.Sprintf(`function(id) {
  id: id,
  check: "grep -qx %%s %[1]s" %% id,
  change: "echo %%s >> %[1]s" %% id,
  remove: "sed -i '/^%%s$/d' %[1]s" %% id,
}
`, trace))
	pat := write(t, dir, "patterns/app.jsonnet", `local step = import '../lib/step.libsonnet';
{
  build: [{id: 'version', always: true, change: 'echo 1.2.3', onChange: ['etcha:buildManifest']}],
  run: [step('one'), step('two')],
}
`)
	jwt := filepath.Join(dir, "app.jwt")
	steps := []struct {
		args  []string
		code  int
		out   string // substring of stdout
		trace string
	}{
		{args: []string{"build", pat, jwt}, code: 0},
		{args: []string{"jwt", jwt}, code: 0, out: `"etchaBuildManifest": "1.2.3"`},
		{args: []string{"render", jwt}, code: 0, out: `"id": "one"`},
		{args: []string{"local", "-c", pat}, code: 1, out: "Would change 2: one, two"},
		{args: []string{"local", "-s", "audit", pat}, code: 1, out: "Would change 2"},
		{args: []string{"local", pat}, code: 0, out: "Changed 2: one, two", trace: "one\ntwo\n"},
		{args: []string{"local", "-c", pat}, code: 0, out: "No changes", trace: "one\ntwo\n"},
		{args: []string{"local", "-r", pat}, code: 0, out: "Removed 2: two, one"},
		{args: []string{"local", fmt.Sprintf(`{id: 'raw', always: true, change: 'echo raw >> %s'}`, trace)}, code: 0, trace: "raw\n"},
		{args: []string{"compare", jwt, jwt}, code: 0, out: "equal", trace: "raw\n"},
		{args: []string{"test", filepath.Join(dir, "patterns")}, code: 0, out: "app.jsonnet: ok", trace: "raw\n"},
		{args: []string{"lint", filepath.Join(dir, "lib")}, code: 0, trace: "raw\n"},
	}
	for _, s := range steps {
		code, out, stderr := cli(t, nil, append([]string{"-c", cfg, "-l", "none"}, s.args...)...)
		if code != s.code || !strings.Contains(out, s.out) {
			t.Fatalf("etcha %s: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q",
				strings.Join(s.args, " "), code, out, stderr, s.code, s.out)
		}
		got, _ := os.ReadFile(trace)
		if string(got) != s.trace {
			t.Fatalf("etcha %s: trace %q, want %q", strings.Join(s.args, " "), got, s.trace)
		}
	}
}

func TestCompareExitCodes(t *testing.T) {
	dir, cfg := setup(t)
	a := write(t, dir, "a/p.jsonnet", `{run: []}`)
	b := write(t, dir, "b/p.jsonnet", `{run: [], id: 'b'}`)
	for _, p := range []string{a, b} {
		if code, _, stderr := cli(t, nil, "-c", cfg, "build", p, p+".jwt"); code != 0 {
			t.Fatalf("build %s: %s", p, stderr)
		}
	}
	for _, tc := range []struct {
		name     string
		new, old string
		code     int
	}{
		{"equal", a + ".jwt", a + ".jwt", 0},
		{"different", a + ".jwt", b + ".jwt", 1},
		{"unreadable", a + ".jwt", filepath.Join(dir, "none.jwt"), 2},
		{"not a jwt", a + ".jwt", a, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, stderr := cli(t, nil, "-c", cfg, "compare", tc.new, tc.old); code != tc.code {
				t.Fatalf("compare: exit %d (%s), want %d", code, stderr, tc.code)
			}
		})
	}
}

// TestConfigFromEnv checks etcha_<path> variables and -x override the file.
func TestConfigFromEnv(t *testing.T) {
	dir, cfg := setup(t)
	p := write(t, dir, "p.jsonnet", `{run: []}`)
	env := []string{"etcha_build_signingKey=ed25519public:MCowBQYDK2VwAyEAwsXVnwaquPnF1J3oqhB1qFrBEAW+2FDkGYv7iqoPVHs="}
	code, _, stderr := cli(t, env, "-c", cfg, "build", p, p+".jwt")
	if code != 1 || !strings.Contains(stderr, "build.signingKey") {
		t.Fatalf("build with a public key from the environment: exit %d, stderr %q; want exit 1 naming build.signingKey", code, stderr)
	}
	priv := "ed25519private:MC4CAQAwBQYDK2VwBCIEIH0r30uYYQVEFJJ7cG5fPLteuGUPb8qBH+vAOjZnnNGJ:lAASVe7woP"
	if code, _, stderr := cli(t, env, "-c", cfg, "-x", "build_signingKey="+priv, "build", p, p+".jwt"); code != 0 {
		t.Fatalf("-x should override the environment: exit %d, %s", code, stderr)
	}
	// The config's verify key is not the documented pair's: verification fails.
	code, out, stderr := cli(t, nil, "-c", cfg, "jwt", p+".jwt")
	if code != 1 || !strings.Contains(out, "etchaPattern") || !strings.Contains(stderr, "jwt is invalid") {
		t.Fatalf("jwt signed by another key: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestUsageAndErrors(t *testing.T) {
	dir, cfg := setup(t)
	bad := write(t, dir, "bad.jsonnet", "{\n  run: [,\n}\n")
	unformatted := write(t, dir, "unformatted.jsonnet", `{run: [  ]}`)
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string // substring of the one-line error; "" means no error output
	}{
		{"help", []string{"-h"}, 0, ""},
		{"command help", []string{"-c", cfg, "local", "-h"}, 0, ""},
		{"no command", nil, 2, "no command"},
		{"unknown command", []string{"-c", cfg, "frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", []string{"--bogus"}, 2, "bogus"},
		{"bad log level", []string{"-l", "loud", "version"}, 2, "log level"},
		{"too many args", []string{"-c", cfg, "render", "a", "b"}, 2, "takes 1 arguments"},
		{"missing args", []string{"-c", cfg, "build"}, 2, "takes 1 to 3 arguments"},
		{"bad -x", []string{"-c", cfg, "-x", "oops", "render", "{}"}, 2, "key=value"},
		{"bad key type", []string{"generate-keys", "hmac"}, 2, "generate-keys"},
		{"malformed jsonnet", []string{"-c", cfg, "local", bad}, 1, "bad.jsonnet:2:"},
		{"missing config", []string{"-c", filepath.Join(dir, "none.jsonnet"), "render", "{}"}, 1, "config"},
		{"version", []string{"version"}, 0, ""},
		{"lint truthy second argument", []string{"-c", cfg, "lint", unformatted, "yes"}, 1, "found linting errors"},
		{"lint unformatted without -f", []string{"-c", cfg, "lint", unformatted}, 0, ""},
		{"no external", []string{"-c", cfg, "-d", "render", "{run: [], x: std.native('getCmd')('true', null, false)}"}, 1, "getCmd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, nil, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.err == "" {
				return
			}
			last := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:]
			if !strings.HasPrefix(last, "etcha: ") || !strings.Contains(last, tc.err) || strings.Count(last, "\n") != 1 {
				t.Fatalf("last stderr line %q, want one line \"etcha: ...%s...\"", last, tc.err)
			}
		})
	}
}

// TestRunPushUsage: run and push check their arguments (exit 2) and an
// etcd:/// pull path without ETCD_ENDPOINTS is a one-line error (exit 1);
// run -o with nothing failing exits 0 and prints etcha:stdout output.
func TestRunPushUsage(t *testing.T) {
	dir, cfg := setup(t)
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"-c", cfg, "run", "extra"}, 2, "takes 0 arguments"},
		{[]string{"-c", cfg, "push"}, 2, "takes at least 1 arguments"},
		{[]string{"-c", cfg, "push", "-h", "h1", "app"}, 2, "needs a pattern path or a command"},
		{[]string{"-c", cfg, "push", "app", "ls"}, 2, "no target has sources \"app\""},
		{[]string{"-c", cfg, "-x", `sources_app={"pullPaths": ["etcd:///p/app"]}`, "run", "-o"}, 1, "ETCD_ENDPOINTS"},
		{[]string{"-c", cfg, "-x", `sources_app={"pullPaths": ["ftp://x"]}`, "run", "-o"}, 1, "sources.app.pullPaths[0]"},
		{[]string{"-c", cfg, "-l", "none", "-x", "httpServer_listenAddress=nonsense", "-x", "run_stateDir=" + dir, "run"}, 1, "set httpServer.listenAddress"},
	} {
		code, _, stderr := cli(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.err) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 && code == 2 {
			t.Errorf("etcha %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.err)
		}
	}
	// A bad httpServer.rateLimitRate is one line at start, before
	// anything binds or runs (the bad listen address would be the error
	// otherwise).
	for _, rate := range []string{"10-S", "ten/s", "10/d"} {
		code, _, stderr := cli(t, nil, "-c", cfg, "-l", "none", "-x", "httpServer_rateLimitRate="+rate, "-x", "httpServer_listenAddress=nonsense", "-x", "run_stateDir="+dir, "run")
		if code != 1 || !strings.HasPrefix(stderr, "etcha: httpServer.rateLimitRate \""+rate+"\": want <count>/<period>") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("run with rateLimitRate %q: exit %d, stderr %q; want exit 1 and one line naming the format", rate, code, stderr)
		}
	}
	// A rate limit under an older Etcha name is refused, not ignored.
	for _, key := range []string{"rateLimiterRate", "run_rateLimiterRate", "http_rateLimitPatterns"} {
		name := strings.ReplaceAll(key, "_", ".")
		code, _, stderr := cli(t, nil, "-c", cfg, "-l", "none", "-x", key+"=10/s", "-x", "httpServer_listenAddress=nonsense", "-x", "run_stateDir="+dir, "run")
		if code != 1 || !strings.HasPrefix(stderr, "etcha: "+name+" is an older Etcha name") || !strings.Contains(stderr, "set httpServer.rateLimitRate") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("run with %s: exit %d, stderr %q; want exit 1 and one line naming httpServer.rateLimitRate", key, code, stderr)
		}
	}
	stdoutCmd := `sources_app={"commands": [{"id": "say", "always": true, "change": "echo hello from run", "onChange": ["etcha:stdout"]}]}`
	code, out, stderr := cli(t, nil, "-c", cfg, "-l", "none", "-x", stdoutCmd, "-x", "run_stateDir="+dir, "run", "-o")
	if code != 0 || out != "hello from run\n" {
		t.Fatalf("run -o: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
}

// TestOneShotGC: commands other than run set GOGC to oneShotGCPercent,
// unless the environment sets GOGC; run keeps the default.
func TestOneShotGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	for _, tc := range []struct {
		name string
		env  []string
		want int
	}{
		{"render", nil, oneShotGCPercent},
		{"version", []string{"HOME=/x"}, oneShotGCPercent},
		{"render", []string{"GOGC=50"}, 100},
		{"run", nil, 100},
	} {
		debug.SetGCPercent(100)
		oneShotGC(tc.name, tc.env)
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("%s with env %q: GOGC %d, want %d", tc.name, tc.env, got, tc.want)
		}
	}
	// Through the CLI: version sets it.
	debug.SetGCPercent(100)
	if code, _, stderr := cli(t, nil, "version"); code != 0 {
		t.Fatalf("version: exit %d %s", code, stderr)
	}
	if got := debug.SetGCPercent(100); got != oneShotGCPercent {
		t.Errorf("after etcha version: GOGC %d, want %d", got, oneShotGCPercent)
	}
}
