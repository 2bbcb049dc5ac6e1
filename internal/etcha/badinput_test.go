package etcha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// signed signs claims with the test key and writes the JWT to dir.
func signed(t *testing.T, dir string, c *token.Claims) string {
	t.Helper()
	key, err := token.ParsePrivateKey(testPrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := token.Sign(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "crafted.jwt", jwt)
}

// TestBadInput checks that each kind of bad input gives one line saying
// what is wrong and executes nothing: every pattern here would append to
// the trace file if any command ran.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	touch := fmt.Sprintf(`{id: 'ran', always: true, change: 'echo ran >> %s'}`, trace)
	good := writeFile(t, dir, "good.jsonnet", `{build: [`+touch+`], run: [`+touch+`]}`)
	malformed := writeFile(t, dir, "malformed.jsonnet", "{\n  run: [\n    "+touch+",,\n  ],\n}\n")
	invalid := writeFile(t, dir, "invalid.jsonnet", `{run: [`+touch+`, {id: 'bad', always: true, change: 'true', onChange: ['missing']}]}`)
	selfTarget := writeFile(t, dir, "self.jsonnet", `{run: [`+touch+`, {id: 'me', change: 'true', onChange: ['me']}]}`)
	badPrefix := writeFile(t, dir, "prefix.jsonnet", `{run: [`+touch+`, {id: 'pre', change: 'true', envPrefix: '1x'}]}`)
	a, _ := newApp(t, baseConfig)
	ctx := context.Background()
	valid := filepath.Join(dir, "valid.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: writeFile(t, dir, "v.jsonnet", `{run: [`+touch+`]}`), Dest: valid}); err != nil {
		t.Fatal(err)
	}
	jwtText := strings.TrimSpace(readFile(t, valid))
	truncated := writeFile(t, dir, "truncated.jwt", jwtText[:len(jwtText)/2])
	garbled := writeFile(t, dir, "garbled.jwt", strings.Replace(jwtText, ".", ".!!", 1))
	escape := signed(t, dir, &token.Claims{IssuedAt: testNow(), Pattern: token.Pattern{
		Entrypoint: "/main.jsonnet",
		Files:      map[string]string{"/main.jsonnet": "import '../../etc/passwd'"},
	}})

	for _, tc := range []struct {
		name string
		cfg  []string // -x overrides
		do   func(a *App) error
		want string
	}{
		{name: "malformed jsonnet", do: func(a *App) error { return a.Local(ctx, LocalOptions{Target: malformed}) }, want: "malformed.jsonnet:3:"},
		{name: "malformed raw jsonnet", do: func(a *App) error { return a.Local(ctx, LocalOptions{Target: touch + ",,"}) }, want: "etcha-snippet.jsonnet:"},
		{name: "unknown target", do: func(a *App) error { return a.Local(ctx, LocalOptions{Target: invalid}) }, want: `command "bad"`},
		{name: "self target", do: func(a *App) error { return a.Local(ctx, LocalOptions{Target: selfTarget}) }, want: `command "me"`},
		{name: "bad envPrefix", do: func(a *App) error { return a.Local(ctx, LocalOptions{Target: badPrefix}) }, want: `command "pre"`},
		{name: "invalid pattern build", do: func(a *App) error {
			return a.Build(ctx, BuildOptions{Pattern: invalid, Dest: filepath.Join(dir, "x.jwt")})
		}, want: `command "bad"`},
		{name: "unreadable key", cfg: []string{"build_signingKey=", "build_signingKeyPath=" + filepath.Join(dir, "nokey")},
			do: func(a *App) error {
				return a.Build(ctx, BuildOptions{Pattern: good, Dest: filepath.Join(dir, "x.jwt")})
			}, want: "signingKeyPath"},
		{name: "public key as signing key", cfg: []string{"build_signingKey=" + testPublicKey},
			do: func(a *App) error {
				return a.Build(ctx, BuildOptions{Pattern: good, Dest: filepath.Join(dir, "x.jwt")})
			}, want: "build.signingKey"},
		{name: "no signing key", cfg: []string{"build_signingKey="},
			do: func(a *App) error {
				return a.Build(ctx, BuildOptions{Pattern: good, Dest: filepath.Join(dir, "x.jwt")})
			}, want: "no signing key"},
		{name: "truncated jwt", do: func(a *App) error { return a.JWT(ctx, truncated) }, want: "truncated.jwt"},
		{name: "truncated jwt render", do: func(a *App) error { return a.Render(ctx, truncated) }, want: "jwt is invalid"},
		{name: "garbled jwt", do: func(a *App) error { return a.JWT(ctx, garbled) }, want: "garbled.jwt"},
		{name: "oversized jwt", cfg: []string{"run_maxJWTSize=64"}, do: func(a *App) error { return a.Render(ctx, valid) }, want: "larger than 64 bytes"},
		{name: "wrong verify key", cfg: []string{`run_verifyKeys=["ed25519public:MCowBQYDK2VwAyEAP3rM1LG3/AZ+45Ysq0jV+iSr/7K0An1pIhJSm+9aX8U="]`},
			do: func(a *App) error { return a.Render(ctx, valid) }, want: "jwt is invalid"},
		{name: "jwt rule refuses", cfg: []string{`run_jwtRule=iss == "someone"`}, do: func(a *App) error { return a.Render(ctx, valid) }, want: `jwt is invalid: jwt refused by jwtRule "iss == \"someone\""`},
		{name: "bundle import outside", do: func(a *App) error { return a.Render(ctx, escape) }, want: "not in the pattern bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, out := newApp(t, baseConfig, tc.cfg...)
			err := tc.do(a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if got := exitCode(err); got != 1 {
				t.Fatalf("exit code %d, want 1", got)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, "MC4CAQAw") {
				t.Fatalf("error is not one line or leaks the key: %q", msg)
			}
			if _, err := os.Stat(trace); !os.IsNotExist(err) {
				t.Fatalf("a command ran (trace exists); stdout %q", out)
			}
			if _, err := os.Stat(filepath.Join(dir, "x.jwt")); !os.IsNotExist(err) {
				t.Fatalf("a JWT was written")
			}
		})
	}
}

// TestJWTInvalidStillPrints checks that `jwt` prints the claims of a JWT
// that fails verification, then fails.
func TestJWTInvalidStillPrints(t *testing.T) {
	dir := t.TempDir()
	a, out := newApp(t, baseConfig)
	ctx := context.Background()
	p := writeFile(t, dir, "p.jsonnet", `{run: [], issuer: 'me', expiresIn: '1h'}`)
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: p, Dest: jwt}); err != nil {
		t.Fatal(err)
	}
	a.Now = func() time.Time { return testNow().Add(2 * time.Hour) }
	err := a.JWT(ctx, jwt)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("JWT() = %v, want an expiry error", err)
	}
	if !strings.Contains(out.String(), `"iss": "me"`) {
		t.Fatalf("claims not printed: %q", out)
	}
}
