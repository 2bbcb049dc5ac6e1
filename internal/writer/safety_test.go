package writer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReaderNeverSeesMix reads two files through one resolution of ..data
// while batches rewrite both; every pair read must come from one batch.
func TestReaderNeverSeesMix(t *testing.T) {
	opts := testOptions(t, Atomic)
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"cert": "v0", "nested/key": "v0"})

	done := make(chan struct{})
	type stats struct {
		consistent, vanished int
		err                  error
	}
	result := make(chan stats, 1)
	go func() {
		var st stats
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < 1_000_000 && time.Now().Before(deadline); i++ {
			select {
			case <-done:
				result <- st
				return
			default:
			}
			a, b, err := readPair(opts.Dir)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				st.vanished++ // the generation was removed under us; retry
			case err != nil:
				st.err = err
			case a != b:
				st.err = fmt.Errorf("mixed read: cert=%q nested/key=%q", a, b)
			default:
				st.consistent++
			}
			if st.err != nil {
				result <- st
				return
			}
		}
		<-done
		result <- st
	}()
	for i := 1; i <= 100; i++ {
		v := "v" + strconv.Itoa(i)
		if res := mustApply(t, w, put("cert", v), put("nested/key", v)); res.Written != 2 {
			t.Fatalf("batch %d: %+v, want 2 written", i, res)
		}
	}
	close(done)
	st := <-result
	if st.err != nil {
		t.Fatal(st.err)
	}
	if st.consistent == 0 {
		t.Fatalf("reader made no complete read (%d vanished)", st.vanished)
	}
	t.Logf("%d consistent reads, %d retried after the generation was removed", st.consistent, st.vanished)
}

// readPair resolves ..data once, like a reader opening the directory, and
// reads both files relative to it.
func readPair(dir string) (string, string, error) {
	r, err := os.OpenRoot(filepath.Join(dir, "..data"))
	if err != nil {
		return "", "", err
	}
	defer r.Close()
	a, err := r.ReadFile("cert")
	if err != nil {
		return "", "", err
	}
	b, err := r.ReadFile("nested/key")
	return string(a), string(b), err
}

// TestPlantedSymlinksDoNotEscape plants symlinks pointing outside the
// target where keys need directories or files.
func TestPlantedSymlinksDoNotEscape(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			writeRaw(t, outside, "sentinel", "untouched")
			opts := Options{Dir: filepath.Join(base, "target"), Layout: layout, UID: -1, GID: -1}
			if err := os.MkdirAll(filepath.Join(opts.Dir, "real"), 0o755); err != nil {
				t.Fatal(err)
			}
			plant := map[string]string{"abs": outside, "rel": "../outside", "file": filepath.Join(outside, "sentinel"), "real/deep": "../../outside"}
			for name, target := range plant {
				if err := os.Symlink(target, filepath.Join(opts.Dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			w := newWriter(t, opts)
			full := map[string]string{"abs/x": "1", "rel/sentinel": "2", "file": "3", "real/deep/y": "4"}
			res, err := w.Sync(bytesMap(full))
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if !res.Changed || res.Written != 4 {
				t.Fatalf("Sync: %+v, want 4 written", res)
			}
			wantFiles(t, outside, map[string]string{"sentinel": "untouched"})
			got, err := visible(opts.Dir)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range full {
				if got[k] != v {
					t.Fatalf("%s = %q, want %q", k, got[k], v)
				}
			}
			mustApply(t, w, del("abs/x"), del("rel/sentinel"), del("file"), del("real/deep/y"))
			wantFiles(t, outside, map[string]string{"sentinel": "untouched"})
		})
	}
}

func TestFailureKeepsSnapshot(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "target")
			out := runHelper(t, "fsize-"+layout.String(), dir, nil)
			if out != "ok" {
				t.Fatalf("helper: %s", out)
			}
		})
	}
}

func TestFailedCallReportsChangeLater(t *testing.T) {
	if out := runHelper(t, "fsize-pending", filepath.Join(t.TempDir(), "target"), nil); out != "ok" {
		t.Fatalf("helper: %s", out)
	}
}

func TestChownNotPermitted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a child as another user")
	}
	base := t.TempDir()
	// The child runs as nobody: it needs to reach and execute a copy of
	// the test binary and to write the target.
	for d := base; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	bin := filepath.Join(base, "writer.test")
	copyFile(t, os.Args[0], bin)
	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(target, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out := runHelperBin(t, bin, "chown", target, cred); out != "ok" {
		t.Fatalf("helper: %s", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func runHelper(t *testing.T, mode, dir string, attr *syscall.SysProcAttr) string {
	return runHelperBin(t, os.Args[0], mode, dir, attr)
}

// runHelperBin re-executes the test binary in a helper mode and returns the
// first line it prints.
func runHelperBin(t *testing.T, bin, mode, dir string, attr *syscall.SysProcAttr) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "WRITER_TEST_HELPER="+mode, "WRITER_TEST_DIR="+dir)
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(line))
	sc.Scan()
	return sc.Text()
}

// TestSymlinkPlantedBetweenCalls swaps a managed directory for a symlink to
// outside between two calls, while the writer trusts its memory of the disk.
func TestSymlinkPlantedBetweenCalls(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			writeRaw(t, outside, "sentinel", "untouched")
			opts := Options{Dir: filepath.Join(base, "target"), Layout: layout, UID: -1, GID: -1}
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"n/a": "1"})
			if err := os.RemoveAll(filepath.Join(opts.Dir, "n")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(opts.Dir, "n")); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Apply([]Change{put("n/sentinel", "evil"), put("n/b", "2")}); err != nil {
				t.Logf("Apply: %v", err) // an error is fine; writing outside is not
			}
			wantFiles(t, outside, map[string]string{"sentinel": "untouched"})
			mustSync(t, w, map[string]string{"n/a": "1", "n/b": "2"})
			wantFiles(t, outside, map[string]string{"sentinel": "untouched"})
			wantFiles(t, opts.Dir, map[string]string{"n/a": "1", "n/b": "2"})
		})
	}
}
