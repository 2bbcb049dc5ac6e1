package writer

import (
	"bufio"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLayoutSwitch(t *testing.T) {
	for _, from := range layouts {
		to := Plain
		if from == Plain {
			to = Atomic
		}
		t.Run(from.String()+"-to-"+to.String(), func(t *testing.T) {
			opts := testOptions(t, from)
			mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "n/b": "2", "gone": "3", "old/c": "4"})
			writeRaw(t, opts.Dir, "user.conf", "mine")
			var logs logBuffer
			opts.Layout, opts.Logger = to, logs.logger()
			full := map[string]string{"a": "1", "n/b": "changed", "new/d": "5"}
			res := mustSync(t, newWriter(t, opts), full)
			if !res.Changed || res.Removed != 2 {
				t.Fatalf("Sync after switch: %+v, want changed, 2 removed", res)
			}
			full["user.conf"] = "mine"
			wantFiles(t, opts.Dir, full)
			if strings.Contains(logs.String(), "WARN") {
				t.Fatalf("switching layout warned about dispenser's own files:\n%s", logs.String())
			}
			entries, _ := os.ReadDir(opts.Dir)
			for _, e := range entries {
				if n := e.Name(); to == Plain && (n == dataLink || isGenName(n)) || to == Atomic && n == manifestName ||
					strings.HasPrefix(n, tmpPrefix) || strings.HasPrefix(n, asidePrefix) {
					t.Fatalf("leftover %s after switching to %v", n, to)
				}
			}
			// The new layout owns the files: deleting them works.
			w := newWriter(t, opts)
			mustSync(t, w, full)
			mustApply(t, w, del("a"), del("n/b"), del("new/d"))
			wantFiles(t, opts.Dir, map[string]string{"user.conf": "mine"})
		})
	}
}

func TestPlainManifest(t *testing.T) {
	opts := testOptions(t, Plain)
	mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "n/m/b": "2"})
	b, err := os.ReadFile(filepath.Join(opts.Dir, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"version":1,"files":["a","n/m/b"],"dirs":["n","n/m"]}`; got != want {
		t.Fatalf("manifest = %s, want %s", got, want)
	}
	// A tampered manifest cannot direct removals outside the target.
	writeRaw(t, filepath.Dir(opts.Dir), "victim", "keep")
	tampered := `{"version":1,"files":["a","../victim","/etc/hostname"],"dirs":[".."]}`
	if err := os.WriteFile(filepath.Join(opts.Dir, manifestName), []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSync(t, newWriter(t, opts), map[string]string{})
	if _, err := os.Stat(filepath.Join(filepath.Dir(opts.Dir), "victim")); err != nil {
		t.Fatalf("victim outside the target: %v", err)
	}
	// A corrupt manifest is ignored, not fatal.
	if err := os.WriteFile(filepath.Join(opts.Dir, manifestName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSync(t, newWriter(t, opts), map[string]string{"x": "1"})
	wantFiles(t, opts.Dir, map[string]string{"x": "1", "n/m/b": "2"})
}

func TestLookupUser(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{{"root", 0, true}, {"0", 0, true}, {"65534", 65534, true}, {"", 0, false}, {"no-such-user-xyz", 0, false}, {"-1", 0, false}} {
		got, err := LookupUser(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("LookupUser(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestLookupGroup uses a group whose name is no user's name, which the
// original tool got wrong by looking groups up as users.
func TestLookupGroup(t *testing.T) {
	name, gid := groupNotUser(t)
	got, err := LookupGroup(name)
	if err != nil || got != gid {
		t.Fatalf("LookupGroup(%q) = %d, %v; want %d", name, got, err, gid)
	}
	if got, err := LookupGroup(strconv.Itoa(gid)); err != nil || got != gid {
		t.Fatalf("LookupGroup(%d) = %d, %v", gid, got, err)
	}
	if _, err := LookupGroup("no-such-group-xyz"); err == nil {
		t.Fatal("LookupGroup of a missing group succeeded")
	}
}

func groupNotUser(t *testing.T) (string, int) {
	t.Helper()
	f, err := os.Open("/etc/group")
	if err != nil {
		t.Skipf("no /etc/group: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 {
			continue
		}
		gid, err := strconv.Atoi(fields[2])
		if err != nil {
			continue
		}
		var unknown user.UnknownUserError
		if _, err := user.Lookup(fields[0]); errors.As(err, &unknown) {
			return fields[0], gid
		}
	}
	t.Skip("every group in /etc/group is also a user name")
	return "", 0
}

// TestPlainManifestAfterApply: Apply keeps the manifest's sorted list of
// files up to date name by name (issue 10 item 2).
func TestPlainManifestAfterApply(t *testing.T) {
	opts := testOptions(t, Plain)
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"b": "1", "n/m/b": "2"})
	manifestIs := func(want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(opts.Dir, manifestName))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("manifest = %s, want %s", b, want)
		}
	}
	mustApply(t, w, put("a", "0"), put("c", "3"), put("n/x", "4"), del("b"))
	manifestIs(`{"version":1,"files":["a","c","n/m/b","n/x"],"dirs":["n","n/m"]}`)
	mustApply(t, w, del("n/m/b"), put("b", "5"))
	manifestIs(`{"version":1,"files":["a","b","c","n/x"],"dirs":["n"]}`)
	mustApply(t, w, del("a"), del("b"), del("c"), del("n/x"))
	manifestIs(`{"version":1,"files":[],"dirs":[]}`)
	mustApply(t, w, put("z", "6"))
	manifestIs(`{"version":1,"files":["z"],"dirs":[]}`)
}
