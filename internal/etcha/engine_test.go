package etcha

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/source"
)

// TestEngineRunsBuiltPattern: a JWT built and signed by Build, received by
// the engine NewEngine makes from the same config, runs with the config's
// exec and the source's vars; the config's static commands are the
// source's pattern until then; a JWT signed by another key never runs.
func TestEngineRunsBuiltPattern(t *testing.T) {
	dir := t.TempDir()
	cfg := `{
  build: {signingKey: '` + testPrivateKey + `'},
  run: {verifyKeys: ['` + testPublicKey + `'], stateDir: '` + filepath.Join(dir, "state") + `'},
  exec: {command: '/bin/sh -c'},
  sources: {
    app: {
      vars: {greeting: 'hello from the source'},
      commands: [{id: 'static', check: 'test -f ` + filepath.Join(dir, "static") + `', change: 'echo static > ` + filepath.Join(dir, "static") + `',
                 remove: 'rm ` + filepath.Join(dir, "static") + `'}],
    },
  },
}`
	app, _ := newApp(t, cfg)
	pat := writeFile(t, dir, "app.jsonnet", `{
  run: [{
    id: 'greet',
    check: 'test -f `+filepath.Join(dir, "greeting")+`',
    change: 'echo "' + std.native('getConfig')().vars.greeting + '" > `+filepath.Join(dir, "greeting")+`',
  }],
}`)
	jwtPath := filepath.Join(dir, "app.jwt")
	if err := app.Build(context.Background(), BuildOptions{Pattern: pat, Dest: jwtPath, Source: "app"}); err != nil {
		t.Fatalf("Build: %v", err)
	}
	e, err := app.NewEngine(context.Background(), EngineOptions{})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	defer e.Close(context.Background())
	if got := e.Names(); len(got) != 1 || got[0] != "app" {
		t.Fatalf("sources %v, want [app]", got)
	}

	r, err := e.Run(context.Background(), "app", source.Origin{})
	if err != nil || r.Err != nil || readFile(t, filepath.Join(dir, "static")) != "static\n" {
		t.Fatalf("start-up run of the static commands: %v, %+v", err, r)
	}

	forged := strings.Replace(readFile(t, jwtPath), ".", ".x", 1)
	if r, _ := e.Receive(context.Background(), "app", forged, source.Origin{Trigger: source.TriggerPush}); r.Status != source.StatusRefused {
		t.Fatalf("a tampered JWT: status %q, want refused", r.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, "greeting")); err == nil {
		t.Fatal("a tampered JWT ran")
	}

	r, err = e.Receive(context.Background(), "app", readFile(t, jwtPath), source.Origin{Trigger: source.TriggerPush})
	if err != nil || r.Status != source.StatusRan || r.Err != nil {
		t.Fatalf("Receive: %v, %+v", err, r)
	}
	if got := readFile(t, filepath.Join(dir, "greeting")); got != "hello from the source\n" {
		t.Fatalf("greeting = %q, want the source's var", got)
	}
	if strings.Join(r.Changed, ",") != "greet" || strings.Join(r.Removed, ",") != "static" {
		t.Fatalf("changed %v removed %v, want [greet] and the dropped static command [static]", r.Changed, r.Removed)
	}
	if _, err := os.Stat(filepath.Join(dir, "static")); !os.IsNotExist(err) {
		t.Fatalf("the dropped static command's file: %v, want it removed", err)
	}
	if _, err := os.Stat(source.StatePath(filepath.Join(dir, "state"), "app")); err != nil {
		t.Fatalf("state file: %v", err)
	}
}
