package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// TestMain fails the run if a goroutine or a script outlives the tests.
func TestMain(m *testing.M) { os.Exit(leaktest.Main(m)) }

// env is one test's world: a directory the scripts write to ($D), a state
// directory, and a signing key that the engine trusts.
type env struct {
	tb    testing.TB
	dir   string // $D of every script
	state string
	priv  token.PrivateKey
	pub   token.PublicKey
	iat   time.Time // the next sign's iat; each sign advances it a second

	// holdRender, if set, is called with the claims at the start of every
	// Render; a test uses it to hold one render while others go on.
	holdRender func(c *token.Claims)
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	priv, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		tb.Fatal(err)
	}
	return &env{tb: tb, dir: tb.TempDir(), state: filepath.Join(tb.TempDir(), "state"), priv: priv, pub: pub,
		iat: time.Now().Add(-time.Hour).Truncate(time.Second)}
}

// exec is the effective exec of every test pattern: /bin/sh with $D set.
func (v *env) exec() command.Exec {
	e, _, err := command.MergeExec(command.Layer{Name: "exec", Exec: &command.Exec{Command: "/bin/sh -ec", Env: map[string]string{"D": v.dir}}})
	if err != nil {
		v.tb.Fatal(err)
	}
	return e
}

// Render renders the JWT's bundle with internal/pattern, as etcha will.
func (v *env) Render(ctx context.Context, source string, c *token.Claims, jwt string) (Pattern, error) {
	if v.holdRender != nil {
		v.holdRender(c)
	}
	if err := ctx.Err(); err != nil { // as a getCmd call would fail
		return Pattern{}, err
	}
	b := pattern.Bundle{Entrypoint: c.Pattern.Entrypoint, Files: c.Pattern.Files}
	e := v.exec()
	res, err := b.Render(ctx, pattern.Options{Exec: &e, Vars: map[string]any{"source": source}})
	if err != nil {
		return Pattern{}, err
	}
	return Pattern{Run: res.Pattern.Run, Exec: e}, nil
}

// claims returns claims carrying jsonnet as the pattern, iat from v.iat
// (then advanced by a second).
func (v *env) claims(jsonnet string) *token.Claims {
	c := &token.Claims{
		IssuedAt: v.iat, ID: "jti-" + v.iat.Format("150405"), Issuer: "tests",
		Pattern: token.Pattern{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": jsonnet}},
	}
	v.iat = v.iat.Add(time.Second)
	return c
}

// sign signs c with key (v.priv if key is zero).
func (v *env) signWith(c *token.Claims, key token.PrivateKey) string {
	v.tb.Helper()
	s, err := token.Sign(c, key)
	if err != nil {
		v.tb.Fatal(err)
	}
	return s
}

func (v *env) sign(jsonnet string) string {
	v.tb.Helper()
	return v.signWith(v.claims(jsonnet), v.priv)
}

// engine starts an Engine trusting v.pub, closed at cleanup.
func (v *env) engine(opts Options, sources ...Config) *Engine {
	v.tb.Helper()
	opts.Renderer = v
	if opts.StateDir == "" {
		opts.StateDir = v.state
	}
	if opts.VerifyKeys == nil {
		opts.VerifyKeys = token.PublicKeys{v.pub}
	}
	e, err := New(context.Background(), opts, sources)
	if err != nil {
		v.tb.Fatal(err)
	}
	v.tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			v.tb.Errorf("Close: %v", err)
		}
	})
	return e
}

// log returns the lines scripts appended to $D/log, joined by ",".
func (v *env) log() string {
	v.tb.Helper()
	b, err := os.ReadFile(filepath.Join(v.dir, "log"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		v.tb.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), ",")
}

func (v *env) exists(name string) bool {
	_, err := os.Stat(filepath.Join(v.dir, name))
	return err == nil
}

// waitLog waits up to 20 s for the log to satisfy ok.
func (v *env) waitLog(what string, ok func(string) bool) {
	v.tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !ok(v.log()) {
		if time.Now().After(deadline) {
			v.tb.Fatalf("waited 20 s for %s; log is %q", what, v.log())
		}
		<-tick.C
	}
}

// receive calls Receive with a 30 s deadline and fails on a call error.
func receive(tb testing.TB, e *Engine, name, jwt string, o Origin) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.Receive(ctx, name, jwt, o)
	if err != nil {
		tb.Fatalf("Receive(%s): %v", name, err)
	}
	return r
}

func run(tb testing.TB, e *Engine, name string, o Origin) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.Run(ctx, name, o)
	if err != nil {
		tb.Fatalf("Run(%s): %v", name, err)
	}
	return r
}

func join(ss []string) string { return strings.Join(ss, ",") }

var push = Origin{Trigger: TriggerPush, Where: "127.0.0.1:1234"}

// logPattern is a pattern whose one always-command appends word to $D/log.
func logPattern(word string) string {
	return `{run: [{id: 'log ` + word + `', always: true, change: 'echo ` + word + ` >> "$D/log"'}]}`
}
