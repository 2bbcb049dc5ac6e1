package etcha

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// The documented key pair (issue 3); fixed so JWTs and golden files are
// reproducible (Ed25519 signatures are deterministic).
const (
	testPrivateKey = "ed25519private:MC4CAQAwBQYDK2VwBCIEIH0r30uYYQVEFJJ7cG5fPLteuGUPb8qBH+vAOjZnnNGJ:lAASVe7woP"
	testPublicKey  = "ed25519public:MCowBQYDK2VwAyEAwsXVnwaquPnF1J3oqhB1qFrBEAW+2FDkGYv7iqoPVHs=:lAASVe7woP"
)

// testNow is the fixed build clock: 2026-11-01T12:00:00Z.
func testNow() time.Time { return time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC) }

// baseConfig signs with the test key, verifies with its public half and
// runs scripts with /bin/sh.
const baseConfig = `{
  build: {signingKey: '` + testPrivateKey + `'},
  run: {verifyKeys: ['` + testPublicKey + `']},
  exec: {command: '/bin/sh -c'},
}`

// newApp loads cfg (Jsonnet text, "" for none) with overrides and returns an
// App with a fixed clock, version and sysinfo writing to the returned
// buffer.
func newApp(t testing.TB, cfg string, overrides ...string) (*App, *bytes.Buffer) {
	t.Helper()
	opts := LoadOptions{Dir: t.TempDir(), Overrides: overrides}
	if cfg != "" {
		opts.Path = writeFile(t, t.TempDir(), "etcha.jsonnet", cfg)
	}
	c, err := LoadConfig(context.Background(), opts)
	if err != nil {
		t.Fatalf("LoadConfig() = %v", err)
	}
	var out bytes.Buffer
	return &App{
		Config:  c,
		Stdout:  &out,
		Now:     testNow,
		Version: "test",
		SysInfo: func() map[string]any { return map[string]any{"hostname": "test"} },
	}, &out
}

// writeFile writes text to dir/name (creating directories) and returns the
// path.
func writeFile(t testing.TB, dir, name, text string) string {
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

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// golden compares got with testdata/<name>, rewriting it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s (run go test -update if intended):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}
