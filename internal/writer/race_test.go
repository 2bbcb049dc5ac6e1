package writer

import (
	"encoding/binary"
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

// startSwapper is the attacker of the race tests: a user with write access
// to dir. It watches dir with inotify and calls attack for every entry
// created there, until the returned stop is called (or a minute passed).
// stop returns how many times attack reported a swap.
func startSwapper(t *testing.T, dir string, attack func(name string) bool) (stop func() int) {
	t.Helper()
	return startSwapperOn(t, dir, unix.IN_CREATE, attack)
}

// startSwapperOn is startSwapper for the inotify events in mask.
func startSwapperOn(t *testing.T, dir string, mask uint32, attack func(name string) bool) (stop func() int) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		t.Fatalf("inotify watch: %v", err)
	}
	done, result := make(chan struct{}), make(chan int, 1)
	go func() {
		swaps := 0
		buf := make([]byte, 64<<10)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-done:
				result <- swaps
				return
			default:
			}
			n, err := unix.Read(fd, buf)
			if err != nil {
				unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 50)
				continue
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				l := int(binary.NativeEndian.Uint32(buf[off+12:]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+l]), "\x00")
				off += unix.SizeofInotifyEvent + l
				if attack(name) {
					swaps++
				}
			}
		}
		<-done
		result <- swaps
	}()
	return func() int {
		close(done)
		n := <-result
		unix.Close(fd)
		return n
	}
}

// exchange swaps two names in dir with one renameat2(RENAME_EXCHANGE).
func exchange(dir, a, b string) bool {
	return unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, a), unix.AT_FDCWD, filepath.Join(dir, b), unix.RENAME_EXCHANGE) == nil
}

// victims are a private file and a private directory (holding a file that
// is readable, as files in a private directory often are) inside the target,
// which the writer must never chmod, chown or delete. They are held open, so
// the checks see them wherever the attacker has moved them.
type victims struct {
	secret, private *os.File
}

func plantVictims(t *testing.T, dir string) *victims {
	t.Helper()
	writeRaw(t, dir, "secret", "s3cret")
	writeRaw(t, dir, "private/data", "inner")
	for name, mode := range map[string]os.FileMode{"secret": 0o600, "private": 0o700, "private/data": 0o644} {
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	v := &victims{}
	var err error
	if v.secret, err = os.Open(filepath.Join(dir, "secret")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.secret.Close() })
	if v.private, err = os.Open(filepath.Join(dir, "private")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.private.Close() })
	return v
}

// check fails unless both victims still exist (have a name) unchanged.
func (v *victims) check(t *testing.T, when string) {
	t.Helper()
	fd, err := unix.Openat(int(v.private.Fd()), "data", unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatalf("%s: private/data: %v", when, err)
	}
	data := os.NewFile(uintptr(fd), "data")
	defer data.Close()
	for _, c := range []struct {
		name    string
		f       *os.File
		mode    os.FileMode
		content string
	}{{"secret", v.secret, 0o600, "s3cret"}, {"private", v.private, 0o700 | os.ModeDir, ""}, {"private/data", data, 0o644, "inner"}} {
		fi, err := c.f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Nlink == 0 || fi.Mode() != c.mode || int(st.Uid) != os.Geteuid() {
			t.Fatalf("%s: victim %s: links %d, mode %v, uid %d; want it kept with mode %v", when, c.name, st.Nlink, fi.Mode(), st.Uid, c.mode)
		}
		if c.content != "" {
			b := make([]byte, 64)
			n, _ := c.f.ReadAt(b, 0)
			if string(b[:n]) != c.content {
				t.Fatalf("%s: victim %s = %q, want %q", when, c.name, b[:n], c.content)
			}
		}
	}
}

// TestRaceSwappedNewDirectory (issue 7 items 1 and 6): every directory the
// writer creates in the target (a generation, or a key's directory in the
// plain layout) is exchanged, as soon as inotify reports it, with a symlink
// to a private file, with the private directory itself (atomic), or with a
// symlink to it (plain). The writer must not chmod, chown or delete either,
// however its Applies fail.
func TestRaceSwappedNewDirectory(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"cert": "v0"})
			v := plantVictims(t, opts.Dir)
			privAt, links := "private", 0
			stop := startSwapper(t, opts.Dir, func(name string) bool {
				if layout == Atomic && !isGenName(name) || layout == Plain && name != "d" {
					return false
				}
				if links%2 == 0 || layout == Plain {
					// In the plain layout a real directory at "d" would be
					// used as it is (plain shares directories), so the
					// attacker plants symlinks to both victims there.
					target := "secret"
					if links%2 == 1 {
						target = "private"
					}
					l := fmt.Sprintf("lnk-%d", links)
					links++
					return os.Symlink(target, filepath.Join(opts.Dir, l)) == nil && exchange(opts.Dir, name, l)
				}
				links++
				if !exchange(opts.Dir, name, privAt) {
					return false
				}
				privAt = name
				return true
			})
			failed := 0
			start := time.Now()
			for i := 0; i < 150 && time.Since(start) < 10*time.Second; i++ {
				var err error
				switch {
				case layout == Atomic:
					_, err = w.Apply([]Change{put("cert", fmt.Sprint("v", i))})
				case i%2 == 0:
					_, err = w.Apply([]Change{put("d/x", fmt.Sprint("v", i))})
				default:
					_, err = w.Apply([]Change{del("d/x")})
				}
				if err != nil {
					failed++
				}
				v.check(t, fmt.Sprintf("after Apply %d", i))
			}
			swaps := stop()
			if swaps == 0 {
				t.Fatal("the attacker never swapped a name; the test proved nothing")
			}
			t.Logf("%d swaps, %d failed Applies", swaps, failed)
			v.check(t, "at the end")
		})
	}
}

// TestRaceProbeChown (issue 7 item 4): New's probe file is exchanged with a
// root-owned directory as soon as it appears; the probe's chown to the
// configured owner must not reach the directory.
func TestRaceProbeChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	dir := filepath.Join(t.TempDir(), "target")
	writeRaw(t, dir, "rootdir/keep", "x")
	root, err := os.Open(filepath.Join(dir, "rootdir"))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	at := "rootdir"
	stop := startSwapper(t, dir, func(name string) bool {
		if !strings.HasPrefix(name, "..probe") || !exchange(dir, name, at) {
			return false
		}
		at = name
		return true
	})
	start := time.Now()
	for i := 0; i < 300 && time.Since(start) < 15*time.Second; i++ {
		if _, err := New(Options{Dir: dir, UID: 65534, GID: 65534}); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("New: %v", err)
		}
	}
	swaps := stop()
	fi, err := root.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Nlink == 0 || st.Uid != 0 || st.Gid != 0 {
		t.Fatalf("root-owned directory: links %d, owner %d:%d after %d swaps; want kept, 0:0", st.Nlink, st.Uid, st.Gid, swaps)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("entries after the probes = %v, want rootdir only", entries)
	}
	t.Logf("%d swaps", swaps)
}

// TestRaceSwappedReusedGeneration (issue 10 item 2): generations are reused
// at once (ReuseAfter 1 ns), and every generation name that appears, by
// mkdir or by the rename before a reuse, is exchanged with a symlink to a
// victim or with the victim directory itself. The writer must never write
// into, chmod, chown or delete a victim.
func TestRaceSwappedReusedGeneration(t *testing.T) {
	opts := testOptions(t, Atomic)
	opts.ReuseAfter = time.Nanosecond
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"cert": "v0", "n/key": "v0"})
	mustApply(t, w, put("cert", "v1")) // a retired generation to reuse
	v := plantVictims(t, opts.Dir)
	var st unix.Stat_t
	if err := unix.Fstat(int(v.private.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// where finds the victim directory's current name.
	where := func() string {
		entries, _ := os.ReadDir(opts.Dir)
		for _, e := range entries {
			if info, err := e.Info(); err == nil && info.Sys().(*syscall.Stat_t).Ino == st.Ino {
				return e.Name()
			}
		}
		return ""
	}
	n := 0
	stop := startSwapperOn(t, opts.Dir, unix.IN_CREATE|unix.IN_MOVED_TO, func(name string) bool {
		if !isGenName(name) {
			return false
		}
		n++
		if n%2 == 0 {
			at := where()
			return at != "" && at != name && exchange(opts.Dir, name, at)
		}
		target := "secret"
		if n%4 == 1 {
			target = "private"
		}
		l := fmt.Sprintf("lnk-%d", n)
		return os.Symlink(target, filepath.Join(opts.Dir, l)) == nil && exchange(opts.Dir, name, l)
	})
	failed := 0
	start := time.Now()
	for i := 0; i < 150 && time.Since(start) < 10*time.Second; i++ {
		if _, err := w.Apply([]Change{put("cert", fmt.Sprint("v", i)), put("n/key", fmt.Sprint("v", i))}); err != nil {
			failed++
		}
		v.check(t, fmt.Sprintf("after Apply %d", i))
	}
	swaps := stop()
	if swaps == 0 {
		t.Fatal("the attacker never swapped a name; the test proved nothing")
	}
	if names, _ := v.private.Readdirnames(-1); len(names) != 1 || names[0] != "data" {
		t.Fatalf("victim directory holds %v, want [data]", names)
	}
	t.Logf("%d swaps, %d failed Applies, %d reuses", swaps, failed, w.reuses)
	v.check(t, "at the end")
}
