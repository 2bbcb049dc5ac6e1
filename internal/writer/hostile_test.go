package writer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates files of another user (uid 65534)")
	}
}

func chown(t *testing.T, name string, uid, gid int) {
	t.Helper()
	if err := os.Lchown(name, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func writeManifest(t *testing.T, dir, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, manifestName)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveEmptyDirsOnlyRealDirs (issue 7 item 2): the directories a
// manifest lists are removed only while they are real, empty directories
// reached through real directories.
func TestRemoveEmptyDirsOnlyRealDirs(t *testing.T) {
	t.Run("crash-during-switch", func(t *testing.T) {
		// An atomic target; a plain run that wanted n/m/x recorded its
		// intent and was killed; the restart is atomic again.
		opts := testOptions(t, Atomic)
		mustSync(t, newWriter(t, opts), map[string]string{"n/m": "live"})
		writeManifest(t, opts.Dir, `{"version":1,"files":["n/m/x"],"dirs":["n","n/m"]}`, 0o600)
		mustSync(t, newWriter(t, opts), map[string]string{"n/m": "live"})
		wantFiles(t, opts.Dir, map[string]string{"n/m": "live"})
	})
	t.Run("file-where-dir-was", func(t *testing.T) {
		opts := testOptions(t, Plain)
		mustSync(t, newWriter(t, opts), map[string]string{"d/x": "1"})
		if err := os.RemoveAll(filepath.Join(opts.Dir, "d")); err != nil {
			t.Fatal(err)
		}
		writeRaw(t, opts.Dir, "d", "user file")
		mustSync(t, newWriter(t, opts), map[string]string{})
		wantFiles(t, opts.Dir, map[string]string{"d": "user file"})
	})
}

// TestUntrustedManifest (issue 7 item 3): a manifest the writer's uid does
// not own, or that others may write, lists files the writer must not delete.
func TestUntrustedManifest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		uid   int
		mode  os.FileMode
		needs bool // root
	}{{"other-owner", 65534, 0o600, true}, {"group-writable", -1, 0o620, false}, {"world-writable", -1, 0o666, false}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needs {
				needRoot(t)
			}
			opts := testOptions(t, Plain)
			var logs logBuffer
			opts.Logger = logs.logger()
			mustSync(t, newWriter(t, opts), map[string]string{"a": "1"})
			writeRaw(t, opts.Dir, "user.conf", "mine")
			writeRaw(t, opts.Dir, "udir/f", "mine too")
			writeManifest(t, opts.Dir, `{"version":1,"files":["a","user.conf","udir/f"],"dirs":["udir"]}`, tc.mode)
			if tc.uid != -1 {
				chown(t, filepath.Join(opts.Dir, manifestName), tc.uid, tc.uid)
			}
			mustSync(t, newWriter(t, opts), map[string]string{})
			got, err := visible(opts.Dir)
			if err != nil {
				t.Fatal(err)
			}
			if got["user.conf"] != "mine" || got["udir/f"] != "mine too" {
				t.Fatalf("files after Sync with a planted manifest: %s", summary(got))
			}
			if log := logs.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "ignoring "+manifestName) {
				t.Fatalf("no error logged for the untrusted manifest:\n%s", log)
			}
		})
	}
}

// TestManifestFIFO (issue 7 item 3): a FIFO named like the manifest must
// not block the writer.
func TestManifestFIFO(t *testing.T) {
	opts := testOptions(t, Plain)
	w := newWriter(t, opts)
	if err := unix.Mkfifo(filepath.Join(opts.Dir, manifestName), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Sync(map[string][]byte{"a": []byte("1")})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
	case <-time.After(20 * time.Second):
		// Unblock the reader so the goroutine ends.
		if f, err := os.OpenFile(filepath.Join(opts.Dir, manifestName), os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		<-done
		t.Fatal("Sync blocked on a FIFO named like the manifest")
	}
	wantFiles(t, opts.Dir, map[string]string{"a": "1"})
}

// TestReservedNamesOfOthers (issue 7 item 3): entries with reserved names
// that the writer did not make (another user's, or a type it never makes
// there) are neither deleted nor fatal.
func TestReservedNamesOfOthers(t *testing.T) {
	needRoot(t)
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"a": "1"})
			names := []string{"..1", "..tmp-x", dataTmpLink, "..2026_01_01_00_00_00.000000000"}
			for _, n := range names {
				writeRaw(t, opts.Dir, n+"/user-file", "theirs")
				chown(t, filepath.Join(opts.Dir, n), 65534, 65534)
				chown(t, filepath.Join(opts.Dir, n, "user-file"), 65534, 65534)
			}
			mustSync(t, newWriter(t, opts), map[string]string{"a": "2"})
			w = newWriter(t, opts)
			mustSync(t, w, map[string]string{"a": "3"})
			mustApply(t, w, put("b", "4"))
			wantFiles(t, opts.Dir, map[string]string{"a": "3", "b": "4"})
			for _, n := range names {
				if b, err := os.ReadFile(filepath.Join(opts.Dir, n, "user-file")); err != nil || string(b) != "theirs" {
					t.Fatalf("%s/user-file = %q, %v; want it kept", n, b, err)
				}
			}
		})
	}
}

// TestStuckDataTmp (issue 7 item 3): a non-empty "..data_tmp" directory,
// even one of the writer's own uid, never makes an atomic run fail.
func TestStuckDataTmp(t *testing.T) {
	opts := testOptions(t, Atomic)
	writeRaw(t, opts.Dir, dataTmpLink+"/junk", "x")
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"a": "1"})
	mustApply(t, w, put("a", "2"))
	wantFiles(t, opts.Dir, map[string]string{"a": "2"})
}

// TestGroupIsExplicit (issue 7 item 5): a setgid directory another user
// made does not give the writer's files its group. In the plain layout a
// key below a directory the writer does not own is unwritable; at the top
// of a setgid target, and in generations, files get the writer's group.
func TestGroupIsExplicit(t *testing.T) {
	needRoot(t)
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			opts.FileMode = 0o640
			if err := os.MkdirAll(filepath.Join(opts.Dir, "conf"), 0o755); err != nil {
				t.Fatal(err)
			}
			chown(t, opts.Dir, 0, 65534)
			chown(t, filepath.Join(opts.Dir, "conf"), 65534, 65534)
			for _, d := range []string{opts.Dir, filepath.Join(opts.Dir, "conf")} { // after chown, which clears setgid
				if err := os.Chmod(d, 0o2777|os.ModeSetgid); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(d); err != nil || fi.Mode()&os.ModeSetgid == 0 {
					t.Fatalf("%s: %v, %v; want setgid", d, fi, err)
				}
			}
			w := newWriter(t, opts)
			res := mustSync(t, w, map[string]string{"tls.key": "k", "conf/tls.key": "k2", "n/x": "y"})
			for _, name := range []string{"tls.key", "n/x", "n"} {
				checkOwner(t, filepath.Join(opts.Dir, name), 0, 0)
			}
			if layout == Plain {
				if len(res.Rejected) != 1 || res.Rejected[0].Key != "conf/tls.key" || res.Rejected[0].Reason != ReasonUnwritable {
					t.Fatalf("Rejected = %v, want conf/tls.key unwritable", res.Rejected)
				}
				if _, err := os.Lstat(filepath.Join(opts.Dir, "conf", "tls.key")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("conf/tls.key written into a directory of uid 65534: %v", err)
				}
			} else {
				gen, _ := os.Readlink(filepath.Join(opts.Dir, dataLink))
				checkOwner(t, filepath.Join(opts.Dir, gen), 0, 0)
				checkOwner(t, filepath.Join(opts.Dir, "conf", "tls.key"), 0, 0)
			}
		})
	}
}

// TestUnwritableKeyMountPoint (issue 7 item 7): a directory that cannot be
// moved aside (a mount point) where a key needs its name makes that key
// unwritable, logged once; the other keys are written, the batch succeeds
// and reports the change, and the key is written once the mount is gone.
func TestUnwritableKeyMountPoint(t *testing.T) {
	needRoot(t)
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			var logs logBuffer
			opts.Logger = logs.logger()
			mnt := filepath.Join(opts.Dir, "mnt")
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
				t.Skipf("cannot mount a tmpfs: %v", err)
			}
			mounted := true
			t.Cleanup(func() {
				if mounted {
					unix.Unmount(mnt, unix.MNT_DETACH)
				}
			})
			w := newWriter(t, opts)
			res, err := w.Sync(bytesMap(map[string]string{"a": "1", "mnt": "m", "z": "2"}))
			if err != nil || !res.Changed || res.Written != 2 {
				t.Fatalf("Sync = %+v, %v; want 2 written, changed, no error", res, err)
			}
			if len(res.Rejected) != 1 || res.Rejected[0].Key != "mnt" || res.Rejected[0].Reason != ReasonUnwritable {
				t.Fatalf("Rejected = %v, want mnt unwritable", res.Rejected)
			}
			for i := range 3 {
				res = mustApply(t, w, put("a", strings.Repeat("x", i+2)))
				if !res.Changed || res.Written != 1 || len(res.Rejected) != 1 {
					t.Fatalf("Apply %d = %+v; want a written, changed, mnt still rejected", i, res)
				}
			}
			if res := mustApply(t, w); res.Changed {
				t.Fatalf("no-op Apply with an unwritable key = %+v, want unchanged", res)
			}
			got, err := visible(opts.Dir)
			if err != nil {
				t.Fatal(err)
			}
			if got["a"] != "xxxx" || got["z"] != "2" {
				t.Fatalf("files = %s", summary(got))
			}
			if n := strings.Count(logs.String(), "reason=unwritable"); n != 1 {
				t.Fatalf("mnt logged %d times, want once:\n%s", n, logs.String())
			}
			if !strings.Contains(logs.String(), "unmount or remove") {
				t.Fatalf("log lacks how to fix:\n%s", logs.String())
			}
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Fatal(err)
			}
			mounted = false
			res = mustApply(t, w)
			if !res.Changed || res.Written != 1 || len(res.Rejected) != 0 {
				t.Fatalf("Apply after unmount = %+v; want mnt written, nothing rejected", res)
			}
			wantFiles(t, opts.Dir, map[string]string{"a": "xxxx", "mnt": "m", "z": "2"})
		})
	}
}

// TestUnwritableKeyForeignDir (issue 7 items 5 and 7, plain layout): a key
// below a directory another user owns is unwritable until the directory is
// the writer's; the keys before and after it are written.
func TestUnwritableKeyForeignDir(t *testing.T) {
	needRoot(t)
	opts := testOptions(t, Plain)
	w := newWriter(t, opts)
	writeRaw(t, opts.Dir, "u/theirs", "x")
	chown(t, filepath.Join(opts.Dir, "u"), 65534, 65534)
	res, err := w.Sync(bytesMap(map[string]string{"a": "1", "u/k": "2", "z": "3"}))
	if err != nil || !res.Changed || res.Written != 2 || len(res.Rejected) != 1 || res.Rejected[0].Reason != ReasonUnwritable {
		t.Fatalf("Sync = %+v, %v; want a and z written, u/k unwritable", res, err)
	}
	if !strings.Contains(res.Rejected[0].Error(), "owned by uid 65534") {
		t.Fatalf("rejection %q does not say what is wrong", res.Rejected[0].Error())
	}
	res = mustApply(t, w, put("z", "4"))
	if !res.Changed || res.Written != 1 || len(res.Rejected) != 1 {
		t.Fatalf("Apply = %+v; want z written, u/k still rejected", res)
	}
	chown(t, filepath.Join(opts.Dir, "u"), 0, 0)
	res = mustApply(t, w)
	if !res.Changed || res.Written != 1 || len(res.Rejected) != 0 {
		t.Fatalf("Apply after chown = %+v; want u/k written", res)
	}
	wantFiles(t, opts.Dir, map[string]string{"a": "1", "u/k": "2", "u/theirs": "x", "z": "4"})
}

// TestFailedBuildCountsNothing (issue 7 item 8): see helperVisible.
func TestFailedBuildCountsNothing(t *testing.T) {
	if out := runHelper(t, "fsize-visible", filepath.Join(t.TempDir(), "target"), nil); out != "ok" {
		t.Fatalf("helper: %s", out)
	}
}

// helperVisible runs as a child: an atomic build fails (file size limit)
// after one file of the new generation was written. Nothing became
// visible, so the result counts nothing, and reverting the change is a
// no-op that reports no change.
func helperVisible(dir string) error {
	w, err := New(Options{Dir: dir, UID: -1, GID: -1})
	if err != nil {
		return err
	}
	if _, err := w.Sync(map[string][]byte{"a": []byte("old-a"), "b": []byte("old-b")}); err != nil {
		return err
	}
	lift, err := limitFileSize(1024)
	if err != nil {
		return err
	}
	res, err := w.Apply([]Change{{Key: "a", Value: []byte("new-a")}, {Key: "b", Value: make([]byte, 4096)}})
	if !errors.Is(err, syscall.EFBIG) || res.Changed || res.Written != 0 || res.Removed != 0 {
		return fmt.Errorf("failed Apply = %+v, %v; want EFBIG and nothing counted", res, err)
	}
	if err := lift(); err != nil {
		return err
	}
	res, err = w.Apply([]Change{{Key: "a", Value: []byte("old-a")}, {Key: "b", Value: []byte("old-b")}})
	if err != nil || res.Changed || res.Written != 0 {
		return fmt.Errorf("Apply reverting to what is on disk = %+v, %v; want no change", res, err)
	}
	return checkFiles(dir, map[string]string{"a": "old-a", "b": "old-b"})
}
