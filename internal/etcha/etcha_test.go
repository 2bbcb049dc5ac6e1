package etcha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// exitCode returns the exit code etcha would use for err.
func exitCode(err error) int {
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.Code
	}
	return 1
}

func TestGolden(t *testing.T) {
	a, out := newApp(t, baseConfig)
	ctx := context.Background()
	jwt := filepath.Join(t.TempDir(), "app.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: "testdata/golden/patterns/app.jsonnet", Dest: jwt}); err != nil {
		t.Fatalf("Build() = %v", err)
	}
	out.Reset()
	if err := a.JWT(ctx, jwt); err != nil {
		t.Fatalf("JWT() = %v", err)
	}
	golden(t, "golden/jwt.json", out.Bytes())

	out.Reset()
	if err := a.Render(ctx, jwt); err != nil {
		t.Fatalf("Render(jwt) = %v", err)
	}
	golden(t, "golden/render.json", out.Bytes())
	fromJWT := out.String()

	out.Reset()
	if err := a.Render(ctx, "testdata/golden/patterns/app.jsonnet"); err != nil {
		t.Fatalf("Render(pattern) = %v", err)
	}
	if got := out.String(); got != fromJWT {
		t.Fatalf("render of the pattern file differs from render of its JWT:\n%s\n%s", got, fromJWT)
	}
}

func TestBuildCacheAndRunVars(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	p := writeFile(t, dir, "p.jsonnet", fmt.Sprintf(`{
  build: [{id: 'v', always: true, change: 'echo from-build', onChange: ['etcha:runVar_v', 'etcha:buildManifest']}],
  run: [{id: std.native('getCmd')('echo run >> %s; echo cached', null, true), change: 'true'}],
  runVars: {v: 'pattern', w: 'pattern'},
  expiresIn: '1h',
}`, marker))
	a, out := newApp(t, baseConfig)
	ctx := context.Background()
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: p, Dest: jwt}); err != nil {
		t.Fatal(err)
	}
	claims, err := token.Parse(readFile(t, jwt), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(claims.RunVars), "map[v:from-build w:pattern]"; got != want {
		t.Fatalf("etchaRunVars = %s, want %s", got, want)
	}
	if got, want := claims.BuildManifest, "from-build"; got != want {
		t.Fatalf("etchaBuildManifest = %q, want %q", got, want)
	}
	if got, want := claims.ExpiresAt.Sub(claims.IssuedAt), time.Hour; got != want {
		t.Fatalf("exp - iat = %v, want %v", got, want)
	}
	if len(claims.Cache) != 1 {
		t.Fatalf("etchaCache = %v, want one entry", claims.Cache)
	}
	if err := os.Remove(marker); err != nil {
		t.Fatalf("getCmd did not run at build: %v", err)
	}
	out.Reset()
	if err := a.Render(ctx, jwt); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"id": "cached"`) {
		t.Fatalf("render = %s, want the cached getCmd value", out)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("getCmd ran again when rendering the JWT (stat: %v)", err)
	}
}

func TestBuildFailureWritesNothing(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.jsonnet", `{build: [{id: 'fails', always: true, change: 'exit 3'}], buildOutput: 'out.jwt'}`)
	a, _ := newApp(t, baseConfig)
	err := a.Build(context.Background(), BuildOptions{Pattern: p, Dest: filepath.Join(dir, "out.jwt")})
	if err == nil || !strings.Contains(err.Error(), "fails") {
		t.Fatalf("Build() = %v, want an error naming the command", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("build left files behind: %v", entries)
	}
}

// stepPattern is a pattern of commands that append their id to trace.
func stepPattern(trace string, ids ...string) string {
	var cmds []string
	for _, id := range ids {
		cmds = append(cmds, fmt.Sprintf(`{id: %q, check: "grep -qx %s %s", change: "echo %s >> %s", remove: "sed -i '/^%s$/d' %s"}`,
			id, id, trace, id, trace, id, trace))
	}
	return "{run: [" + strings.Join(cmds, ", ") + "]}"
}

func TestLocalModes(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	p := writeFile(t, dir, "p.jsonnet", stepPattern(trace, "a", "b"))
	a, out := newApp(t, baseConfig+`+{sources: {audit: {checkOnly: true}}}`)
	ctx := context.Background()
	steps := []struct {
		name      string
		o         LocalOptions
		code      int
		out, want string
	}{
		{name: "check before", o: LocalOptions{Check: true}, code: 1, out: "Would change 2: a, b", want: ""},
		{name: "checkOnly source", o: LocalOptions{Source: "audit"}, code: 1, out: "Would change 2", want: ""},
		{name: "change", code: 0, out: "Changed 2: a, b", want: "a\nb\n"},
		{name: "change again", code: 0, out: "No changes", want: "a\nb\n"},
		{name: "check after", o: LocalOptions{Check: true}, code: 0, out: "No changes", want: "a\nb\n"},
		{name: "remove", o: LocalOptions{Remove: true}, code: 0, out: "Removed 2: b, a", want: ""},
	}
	for _, s := range steps {
		out.Reset()
		s.o.Target = p
		err := a.Local(ctx, s.o)
		if got := exitCode(err); got != s.code {
			t.Fatalf("%s: exit %d (%v), want %d", s.name, got, err, s.code)
		}
		if !strings.Contains(out.String(), s.out) {
			t.Fatalf("%s: output %q, want %q", s.name, out, s.out)
		}
		got, _ := os.ReadFile(trace)
		if string(got) != s.want {
			t.Fatalf("%s: trace %q, want %q", s.name, got, s.want)
		}
	}
}

func TestLocalRawJsonnetAndFilter(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	a, _ := newApp(t, baseConfig)
	ctx := context.Background()
	raw := fmt.Sprintf(`{id: 'raw', always: true, change: 'echo raw >> %s'}`, trace)
	if err := a.Local(ctx, LocalOptions{Target: raw}); err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, dir, "g.jsonnet", fmt.Sprintf(`{run: [
  {id: 'top', always: true, change: 'echo top >> %[1]s'},
  {id: 'g', commands: [{id: 'in', always: true, change: 'echo in >> %[1]s'}]},
]}`, trace))
	if err := a.Local(ctx, LocalOptions{Target: p, ParentIDs: []string{"g"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, trace), "raw\nin\n"; got != want {
		t.Fatalf("trace = %q, want %q", got, want)
	}
	err := a.Local(ctx, LocalOptions{Target: p, Source: "nope"})
	if err == nil || !strings.Contains(err.Error(), `source "nope"`) {
		t.Fatalf("Local(-s nope) = %v, want an unknown-source error", err)
	}
}

func TestLocalCommandFailure(t *testing.T) {
	a, _ := newApp(t, baseConfig)
	err := a.Local(context.Background(), LocalOptions{Target: `{id: 'boom', always: true, change: 'exit 4'}`})
	if got := exitCode(err); got != 1 || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Local() = %v (exit %d), want exit 1 naming boom", err, got)
	}
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	a, out := newApp(t, baseConfig)
	ctx := context.Background()
	build := func(name, text string, now time.Time, version string) string {
		t.Helper()
		a.Now = func() time.Time { return now }
		a.Version = version
		p := writeFile(t, dir, name+".jsonnet", text)
		dest := filepath.Join(dir, name+".jwt")
		if err := a.Build(ctx, BuildOptions{Pattern: p, Dest: dest}); err != nil {
			t.Fatal(err)
		}
		return dest
	}
	// All builds share the entrypoint name, so only the content differs.
	same1 := build("x", `{run: []}`, testNow(), "v1")
	os.Rename(same1, same1+".1")
	same2 := build("x", `{run: []}`, testNow().Add(time.Hour), "v1")
	os.Rename(same2, same2+".2")
	otherVersion := build("x", `{run: []}`, testNow(), "v2")
	os.Rename(otherVersion, otherVersion+".3")
	otherPattern := build("x", `{run: [], id: 'changed'}`, testNow(), "v1")
	garbled := writeFile(t, dir, "garbled.jwt", "not a jwt")
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	for _, tc := range []struct {
		name     string
		new, old string
		ignore   bool
		code     int
		out      string
	}{
		{name: "equal", new: same1 + ".1", old: same2 + ".2", code: 0, out: "equal"},
		{name: "version", new: same1 + ".1", old: otherVersion + ".3", code: 1, out: "different: etchaVersion"},
		{name: "version ignored", new: same1 + ".1", old: otherVersion + ".3", ignore: true, code: 0, out: "equal"},
		{name: "pattern", new: same1 + ".1", old: otherPattern, code: 1, out: "different: etchaPattern"},
		{name: "garbled", new: same1 + ".1", old: garbled, code: 2},
		{name: "missing", new: filepath.Join(dir, "none.jwt"), old: same1 + ".1", code: 2},
		{name: "url", new: srv.URL + "/x.jwt.1", old: same2 + ".2", code: 0, out: "equal"},
		{name: "url not found", new: srv.URL + "/none.jwt", old: same2 + ".2", code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out.Reset()
			err := a.Compare(ctx, tc.new, tc.old, tc.ignore)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("Compare() = %v, exit %d, want %d", err, got, tc.code)
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Fatalf("output %q, want %q", out, tc.out)
			}
		})
	}
}

func TestGenerateKeys(t *testing.T) {
	for _, typ := range []string{"", "ed25519", "ecp256", "rsa2048"} {
		t.Run(typ, func(t *testing.T) {
			a, out := newApp(t, "")
			if err := a.GenerateKeys(typ); err != nil {
				t.Fatal(err)
			}
			var keys struct{ PrivateKey, PublicKey string }
			if err := json.Unmarshal(out.Bytes(), &keys); err != nil {
				t.Fatal(err)
			}
			priv, err := token.ParsePrivateKey(keys.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := priv.Public().String(), keys.PublicKey; got != want {
				t.Fatalf("public key %s does not match the private key's %s", want, got)
			}
		})
	}
	a, _ := newApp(t, "")
	if err := a.GenerateKeys("hmac"); !IsUsage(err) {
		t.Fatalf("GenerateKeys(hmac) = %v, want a usage error", err)
	}
}

// TestBuildSource checks that the build's source argument applies that
// source's vars (to rendering) and exec (to build commands).
func TestBuildSource(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.jsonnet", `{
  build: [{id: 'm', always: true, change: 'echo ' + std.native('getConfig')().vars.where + ' $WHO', onChange: ['etcha:buildManifest']}],
}`)
	a, _ := newApp(t, baseConfig+`+{vars: {where: 'top'}, sources: {s: {vars: {where: 'source'}, exec: {env: {WHO: 'me'}}}}}`)
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(context.Background(), BuildOptions{Pattern: p, Dest: jwt, Source: "s"}); err != nil {
		t.Fatal(err)
	}
	claims, err := token.Parse(readFile(t, jwt), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := claims.BuildManifest, "source me"; got != want {
		t.Fatalf("etchaBuildManifest = %q, want %q", got, want)
	}
}

// TestStdoutEvent checks the internal effect of etcha:stdout (spec §4.6).
func TestStdoutEvent(t *testing.T) {
	a, out := newApp(t, baseConfig)
	err := a.Local(context.Background(), LocalOptions{Target: `{id: 'say', always: true, change: 'echo hello there', onChange: ['etcha:stdout']}`})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "hello there\nChanged 1: say\n"; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

// TestRenderSources checks the three kinds of render target besides a
// .jsonnet path: a Jsonnet file with another extension, raw Jsonnet, and
// JWT text given directly.
func TestRenderSources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "lib.libsonnet", `{id: 'from lib', change: 'true'}`)
	other := writeFile(t, dir, "p.txt", `{run: [import 'lib.libsonnet']}`)
	a, out := newApp(t, baseConfig)
	ctx := context.Background()
	for _, target := range []string{other, `{run: [{id: 'from lib', change: 'true'}]}`} {
		out.Reset()
		if err := a.Render(ctx, target); err != nil {
			t.Fatalf("Render(%q) = %v", target, err)
		}
		if !strings.Contains(out.String(), `"id": "from lib"`) {
			t.Fatalf("Render(%q) printed %q", target, out)
		}
	}
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: writeFile(t, dir, "p.jsonnet", `{run: [import 'lib.libsonnet']}`), Dest: jwt}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := a.Render(ctx, strings.TrimSpace(readFile(t, jwt))); err != nil {
		t.Fatalf("Render(jwt text) = %v", err)
	}
	if !strings.Contains(out.String(), `"id": "from lib"`) {
		t.Fatalf("Render(jwt text) printed %q", out)
	}
}

// TestGetConfigAndEnv checks what patterns see: getConfig() without the
// signing key and with the effective exec, and getEnv reading the process
// environment only with envInherit.
func TestGetConfigAndEnv(t *testing.T) {
	const p = `{run: [], config: std.native('getConfig')(), foo: std.native('getEnv')('FOO', 'unset', false)}`
	for _, tc := range []struct {
		name, cfg, foo string
	}{
		{"no inherit", baseConfig + `+{exec+: {env: {BAR: '1'}}}`, "unset"},
		{"inherit", baseConfig + `+{exec+: {envInherit: true}}`, "from-process"},
		{"exec env", baseConfig + `+{exec+: {env: {FOO: 'from-exec'}}}`, "from-exec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, out := newApp(t, tc.cfg)
			a.Env = []string{"FOO=from-process"}
			if err := a.Render(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			var got struct {
				Config struct {
					Build map[string]any
					Exec  struct{ Command string }
					Test  bool
				}
				Foo string
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Foo != tc.foo {
				t.Fatalf("getEnv('FOO') = %q, want %q", got.Foo, tc.foo)
			}
			if got.Config.Exec.Command != "/bin/sh -c" {
				t.Fatalf("getConfig().exec.command = %q, want /bin/sh -c", got.Config.Exec.Command)
			}
			if _, ok := got.Config.Build["signingKey"]; ok || strings.Contains(out.String(), "MC4CAQAw") {
				t.Fatalf("getConfig() exposes the signing key: %s", out)
			}
		})
	}
}
