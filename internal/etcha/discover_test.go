package etcha

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDiscoveredConfigTrust checks that a config file found by the upward
// search is used only if nobody else could have written it, that a
// skipped file is named in a warning and none of its natives run, that the
// search stops at the home directory, and that -c is not restricted.
func TestDiscoveredConfigTrust(t *testing.T) {
	const otherUID = 54321
	for _, tc := range []struct {
		name     string
		prepare  func(t *testing.T, p string) // adjusts the planted config at p
		home     string                       // relative to the root; "" is the root's parent
		root     bool                         // needs euid 0 (chown)
		wantUsed bool
		wantWarn string
	}{
		{name: "own file", prepare: func(*testing.T, string) {}, wantUsed: true},
		{name: "world writable", prepare: chmod(0o666), wantWarn: "writable by group or others"},
		{name: "group writable", prepare: chmod(0o664), wantWarn: "writable by group or others"},
		{name: "other owner", root: true, prepare: func(t *testing.T, p string) {
			if err := os.Chown(p, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}, wantWarn: fmt.Sprintf("owned by uid %d", otherUID)},
		{name: "symlink of other owner", root: true, prepare: func(t *testing.T, p string) {
			real := p + ".real"
			if err := os.Rename(p, real); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, p); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(p, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}, wantWarn: "symlink it is owned by uid"},
		{name: "directory", prepare: func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, wantWarn: "not a regular file"},
		{name: "above home", prepare: func(*testing.T, string) {}, home: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("needs root to chown a file to another user")
			}
			root := t.TempDir()
			trace := filepath.Join(root, "trace")
			cfg := writeFile(t, root, DefaultConfigName,
				fmt.Sprintf(`{vars: {planted: std.native('getCmd')('echo ran >> %s; echo yes', null, false)}}`, trace))
			tc.prepare(t, cfg)
			deep := filepath.Join(root, "a", "b")
			writeFile(t, deep, "keep", "")
			home := filepath.Dir(root)
			if tc.home != "" {
				home = filepath.Join(root, tc.home)
			}
			var logs bytes.Buffer
			c, err := LoadConfig(context.Background(), LoadOptions{
				Dir: deep, Home: home, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.Vars["planted"] == "yes", tc.wantUsed; got != want {
				t.Fatalf("planted config used = %v, want %v (vars %v)", got, want, c.Vars)
			}
			if _, err := os.Stat(trace); tc.wantUsed != (err == nil) {
				t.Fatalf("getCmd ran = %v, want %v", err == nil, tc.wantUsed)
			}
			if tc.wantWarn == "" {
				if logs.Len() > 0 {
					t.Fatalf("unexpected warning: %s", logs.String())
				}
				return
			}
			if got := logs.String(); !strings.Contains(got, tc.wantWarn) || !strings.Contains(got, cfg) || !strings.Contains(got, "level=WARN") {
				t.Fatalf("log = %q, want a warning naming %s and %q", got, cfg, tc.wantWarn)
			}
		})
	}
}

func chmod(mode os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, p string) {
		t.Helper()
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiscoveredConfigSkipsToParent checks that a skipped file does not end
// the search: a trusted config further up is used.
func TestDiscoveredConfigSkipsToParent(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, DefaultConfigName, `{vars: {from: 'root'}}`)
	chmod(0o666)(t, writeFile(t, filepath.Join(root, "a"), DefaultConfigName, `{vars: {from: 'a'}}`))
	deep := filepath.Join(root, "a", "b")
	writeFile(t, deep, "keep", "")
	c, err := LoadConfig(context.Background(), LoadOptions{Dir: deep, Home: root})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Vars["from"], "root"; got != want {
		t.Fatalf("vars.from = %v, want %v", got, want)
	}
}

// TestExplicitConfigNotRestricted checks that -c loads a file whatever its
// mode: the user chose it.
func TestExplicitConfigNotRestricted(t *testing.T) {
	p := writeFile(t, t.TempDir(), "c.jsonnet", `{vars: {x: 1}}`)
	chmod(0o666)(t, p)
	c, err := LoadConfig(context.Background(), LoadOptions{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Vars["x"], float64(1); got != want {
		t.Fatalf("vars.x = %v, want %v", got, want)
	}
}

// TestSigningKeyPathSearchTrust checks the same rule for a bare
// build.signingKeyPath: a world-writable key file in a parent is skipped
// with a warning, and the search stops at HOME.
func TestSigningKeyPathSearchTrust(t *testing.T) {
	for _, tc := range []struct {
		name, home string // home relative to the key's directory
		mode       os.FileMode
		wantWarn   string
	}{
		{name: "world writable", mode: 0o666, wantWarn: "writable by group or others"},
		{name: "above home", home: "x", mode: 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := writeFile(t, dir, "signing.key", testPrivateKey+"\n")
			chmod(tc.mode)(t, key)
			deep := filepath.Join(dir, "x", "y")
			writeFile(t, deep, "keep", "")
			t.Chdir(deep)
			a, _ := newApp(t, `{build: {signingKeyPath: 'signing.key'}}`)
			var logs bytes.Buffer
			a.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			a.Env = []string{"HOME=" + filepath.Join(dir, tc.home)}
			if tc.home == "" {
				a.Env = []string{"HOME=" + filepath.Dir(dir)}
			}
			_, err := a.signingKey()
			if err == nil || !strings.Contains(err.Error(), "no usable file signing.key") {
				t.Fatalf("signingKey() = %v, want a not-found error", err)
			}
			if tc.wantWarn != "" && (!strings.Contains(logs.String(), tc.wantWarn) || !strings.Contains(logs.String(), key)) {
				t.Fatalf("log = %q, want a warning naming %s and %q", logs.String(), key, tc.wantWarn)
			}
		})
	}
}
