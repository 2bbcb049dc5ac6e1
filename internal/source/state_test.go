package source

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// static returns the static commands pattern of a source from JSON.
func (v *env) static(js string) *Pattern {
	v.tb.Helper()
	p := &Pattern{Exec: v.exec()}
	if err := json.Unmarshal([]byte(js), &p.Run); err != nil {
		v.tb.Fatal(err)
	}
	return p
}

const staticJSON = `[{"id": "static", "always": true, "change": "echo static >> \"$D/log\""}]`

func TestRestoreAfterRestart(t *testing.T) {
	v := newEnv(t)
	cfg := Config{Name: "app", Static: v.static(staticJSON)}
	e := v.engine(Options{}, cfg)
	first := v.sign(tutorial1)
	receive(t, e, "app", first, push)
	st, err := os.Stat(StatePath(v.state, "app"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v; want 0600", err, st.Mode())
	}
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Receive(t.Context(), "app", first, push); err != ErrClosed {
		t.Errorf("Receive after Close: %v, want ErrClosed", err)
	}
	if err := os.Remove(filepath.Join(v.dir, "copy")); err != nil {
		t.Fatal(err)
	}

	e2 := v.engine(Options{}, cfg)
	if cur, _ := e2.Current("app"); cur != first {
		t.Fatal("restart did not restore the saved pattern over the static commands")
	}
	r := run(t, e2, "app", Origin{Trigger: TriggerStartup})
	if join(r.Changed) != "write a file,copy file" || !v.exists("copy") || v.log() != "" {
		t.Errorf("start-up run: changed %q, copy %v, log %q; want the restored pattern, not the static commands", r.Changed, v.exists("copy"), v.log())
	}
	r = receive(t, e2, "app", v.sign(tutorial2), push)
	if got, want := join(r.Removed), "copy file,write a file"; got != want {
		t.Errorf("push after restart removed %q, want %q (diff against the restored pattern)", got, want)
	}
}

func TestNoRestore(t *testing.T) {
	v := newEnv(t)
	cfg := Config{Name: "app", NoRestore: true, Static: v.static(staticJSON)}
	e := v.engine(Options{}, cfg)
	if r := run(t, e, "app", Origin{}); r.Status != StatusRan || v.log() != "static" {
		t.Fatalf("static commands at start-up: status %s, log %q", r.Status, v.log())
	}
	receive(t, e, "app", v.sign(logPattern("pushed")), push)
	if v.log() != "static,pushed" {
		t.Fatalf("log %q", v.log())
	}
	if _, err := os.Stat(StatePath(v.state, "app")); !os.IsNotExist(err) {
		t.Errorf("noRestore saved the JWT (stat err %v)", err)
	}
	// Even a state file that is there is not restored.
	if err := os.MkdirAll(v.state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(StatePath(v.state, "app"), []byte(v.sign(logPattern("saved"))), 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := v.engine(Options{}, cfg)
	if cur, _ := e2.Current("app"); cur != "" {
		t.Error("noRestore restored a state file")
	}
	run(t, e2, "app", Origin{})
	if got, want := v.log(), "static,pushed,static"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

func TestNothingToRestore(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	if r := run(t, e, "app", Origin{}); r.Status != StatusSkipped {
		t.Errorf("no state, no static: status %s, want skipped", r.Status)
	}
}

// A state file that does not verify, or is not ours, is ignored: the
// static commands are current, and the file's pattern never runs.
func TestBadStateFileIgnored(t *testing.T) {
	v := newEnv(t)
	otherPriv, _, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	valid := v.sign(logPattern("file"))
	for _, tc := range []struct {
		name  string
		write func(path string) error
	}{
		{"other key", func(p string) error {
			return os.WriteFile(p, []byte(v.signWith(v.claims(logPattern("file")), otherPriv)), 0o600)
		}},
		{"garbage", func(p string) error { return os.WriteFile(p, []byte("\x00garbage"), 0o600) }},
		{"symlink", func(p string) error {
			target := filepath.Join(t.TempDir(), "x.jwt")
			if err := os.WriteFile(target, []byte(valid), 0o600); err != nil {
				return err
			}
			return os.Symlink(target, p)
		}},
		{"group writable", func(p string) error {
			if err := os.WriteFile(p, []byte(valid), 0o600); err != nil {
				return err
			}
			return os.Chmod(p, 0o620)
		}},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.RemoveAll(v.state); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(v.state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := tc.write(StatePath(v.state, "app")); err != nil {
				t.Fatal(err)
			}
			e := v.engine(Options{}, Config{Name: "app", Static: v.static(staticJSON)})
			if cur, _ := e.Current("app"); cur != "" {
				t.Fatal("a bad state file was restored")
			}
			if err := os.Remove(filepath.Join(v.dir, "log")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			run(t, e, "app", Origin{})
			if got, want := v.log(), "static"; got != want {
				t.Errorf("start-up run log %q, want %q", got, want)
			}
		})
	}
	// The same valid file, well kept, is restored: the cases above failed
	// for their own reason.
	if err := os.RemoveAll(v.state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(v.state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(StatePath(v.state, "app"), []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	if cur, _ := v.engine(Options{}, Config{Name: "app"}).Current("app"); cur != valid {
		t.Error("a valid state file was not restored")
	}
}

func TestStatePath(t *testing.T) {
	for _, tc := range []struct{ dir, name, want string }{
		{"/s", "app", "/s/app.jwt"},
		{"/s", "web/app", "/s/web%2Fapp.jwt"},
		{"/s", "..", "/s/...jwt"},
		{"", "app", "app.jwt"},
	} {
		if got := StatePath(tc.dir, tc.name); got != tc.want {
			t.Errorf("StatePath(%q, %q) = %q, want %q", tc.dir, tc.name, got, tc.want)
		}
	}
}

// A source name with a slash is saved as one file in the state directory.
func TestSaveSlashName(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "web/app"})
	jwt := v.sign(logPattern("a"))
	receive(t, e, "web/app", jwt, push)
	if b, err := os.ReadFile(filepath.Join(v.state, "web%2Fapp.jwt")); err != nil || string(b) != jwt {
		t.Fatalf("state file: %v", err)
	}
	if cur, _ := v.engine(Options{}, Config{Name: "web/app"}).Current("web/app"); cur != jwt {
		t.Error("not restored")
	}
}

// Whitespace around a JWT (a pulled file's newline) is not kept.
func TestSavedJWTTrimmed(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	jwt := v.sign(logPattern("a"))
	receive(t, e, "app", "\n "+jwt+"\n", Origin{Trigger: TriggerPull, Where: "/etc/app.jwt"})
	if cur, _ := e.Current("app"); cur != jwt {
		t.Errorf("current %q, want the JWT without whitespace", cur)
	}
	if b, _ := os.ReadFile(StatePath(v.state, "app")); string(b) != jwt {
		t.Errorf("saved %q, want the JWT without whitespace", b)
	}
}
