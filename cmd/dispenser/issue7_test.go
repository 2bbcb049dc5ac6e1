package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// mountTmpfs mounts a tmpfs on dir until the test ends; it skips the test
// when mounting is not allowed.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("dispenser-test", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("mount tmpfs on %s: %v (needs root)", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TestBackoffWhileWritesFail: with the target read-only, a stream of puts
// makes one failed write, then one per backoff step (1s doubling, with
// jitter), not one per batch; once the target is writable again, every
// key lands (issue 7 item 11).
func TestBackoffWhileWritesFail(t *testing.T) {
	dir := t.TempDir()
	mountTmpfs(t, dir)
	s := etcdtest.Start(t)
	r := start(t, s, "-p", "/b", "-t", dir)
	r.errs.containing(t, "target in sync")
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	var want []string
	for i := range 30 {
		put(t, s, fmt.Sprintf("/b/k%02d", i), "v")
		want = append(want, fmt.Sprintf("k%02d=v", i))
	}
	r.errs.containing(t, "write failed")
	first := time.Now()
	r.errs.containing(t, "write failed")
	r.errs.containing(t, "write failed")
	if gap := time.Since(first); gap < time.Second {
		t.Fatalf("three failed writes within %v: the backoff (at least 0.5s, then 1s) was not honoured; log:\n%s", gap, r.errs.String())
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT, ""); err != nil {
		t.Fatalf("remount read-write: %v", err)
	}
	r.errs.containing(t, "files updated")
	if got := contents(dir); got != strings.Join(want, ",") {
		t.Fatalf("after the target became writable: %q, want all 30 keys", got)
	}
}

// TestUnwritableKeyStillSignals: a key that cannot be written (its name is
// a mount point in the target) blocks nothing else: the other keys of the
// same transaction and later ones land, and the child is signalled for
// each change (issue 7 item 7).
func TestUnwritableKeyStillSignals(t *testing.T) {
	for _, layout := range []string{"atomic", "plain"} {
		t.Run(layout, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "m"), 0o755); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, filepath.Join(dir, "m"))
			s := etcdtest.Start(t)
			put(t, s, "/u/a", "1")
			r := start(t, s, append([]string{"-p", "/u", "-t", dir, "-s", "HUP", "--layout", layout}, childArgs(dir, "serve")...)...)
			if got, _ := r.out.next(t, "ready"); got != "ready a=1" {
				t.Fatalf("child started with %q", got)
			}
			bad := "/u/m/x" // atomic: m must become a symlink; m is busy
			if layout == "plain" {
				bad = "/u/m" // plain: a file must replace the directory m; m is busy
			}
			c := s.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			if _, err := c.Txn(ctx).Then(clientv3.OpPut(bad, "x"), clientv3.OpPut("/u/a", "2"), clientv3.OpPut("/u/z", "1")).Commit(); err != nil {
				t.Fatal(err)
			}
			if got, _ := r.out.next(t, "HUP"); !strings.Contains(got, "a=2") || !strings.Contains(got, "z=1") {
				t.Fatalf("after a txn with an unwritable key the child saw %q, want a=2 and z=1; log:\n%s", got, r.errs.String())
			}
			put(t, s, "/u/b", "1")
			if got, _ := r.out.next(t, "HUP"); !strings.Contains(got, "b=1") {
				t.Fatalf("a later put: the child saw %q, want b=1; log:\n%s", got, r.errs.String())
			}
		})
	}
}

// TestPartialWriteStillSignals: a change set that fails part-way (here the
// disk fills up in the plain layout, after a=2 is already in place) is an
// error for the whole batch, yet readers already see a=2, so the child gets
// its signal at once rather than after a retry that may never succeed
// (issue 7 item 7, the error path).
func TestPartialWriteStillSignals(t *testing.T) {
	disk := t.TempDir()
	if err := unix.Mount("dispenser-test", disk, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs on %s: %v (needs root)", disk, err)
	}
	t.Cleanup(func() { unix.Unmount(disk, unix.MNT_DETACH) })
	dir := filepath.Join(disk, "target")
	s := etcdtest.Start(t)
	put(t, s, "/p/a", "1")
	r := start(t, s, append([]string{"-p", "/p", "-t", dir, "-s", "HUP", "--layout", "plain"}, childArgs(dir, "serve")...)...)
	if got, _ := r.out.next(t, "ready"); got != "ready a=1" {
		t.Fatalf("child started with %q", got)
	}
	// Leave 64 KiB free on the tmpfs, beside (not in) the target.
	var st unix.Statfs_t
	if err := unix.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	filler := int64(st.Bavail)*st.Bsize - 64<<10
	if err := os.WriteFile(filepath.Join(disk, "filler"), make([]byte, filler), 0o600); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	big := strings.Repeat("z", 256<<10) // "z" sorts after "a": a=2 is written first
	if _, err := c.Txn(ctx).Then(clientv3.OpPut("/p/a", "2"), clientv3.OpPut("/p/z", big)).Commit(); err != nil {
		t.Fatal(err)
	}
	r.errs.containing(t, "no space left")
	if got, _ := r.out.next(t, "HUP"); got != "HUP a=2" {
		t.Fatalf("after a write that failed part-way the child saw %q, want %q", got, "HUP a=2")
	}
}

// TestSecondStopKillsGroup: the second stop signal kills the child's whole
// process group, not only the child (issue 7 item 13).
func TestSecondStopKillsGroup(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir, "--kill-timeout=10m"}, childArgs(dir, "group-ignore-term")...)...)
	line, _ := r.out.next(t, "grandchild")
	gpid, err := strconv.Atoi(strings.TrimPrefix(line, "grandchild "))
	if err != nil {
		t.Fatalf("child printed %q", line)
	}
	t.Cleanup(func() { syscall.Kill(gpid, syscall.SIGKILL) })
	r.out.next(t, "ready")
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r.out.next(t, "TERM")
	if exited(gpid) {
		t.Fatalf("grandchild %d is not running before the second stop signal", gpid)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if got, want := report(&bytes.Buffer{}, r.wait(t)), 128+int(syscall.SIGKILL); got != want {
		t.Fatalf("exit status = %d, want %d", got, want)
	}
	deadline := time.Now().Add(waitLong)
	for !exited(gpid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d in the child's group still runs after the second stop signal", gpid)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc, bounded by the deadline
	}
}

// exited reports whether pid is gone or a zombie.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) == 0 || f[0] == "Z"
}

// TestStopSignalsBeforeChild: before the child exists (here: while etcd is
// unreachable), SIGTERM, SIGINT and SIGQUIT each stop dispenser cleanly
// (issue 7 item 14).
func TestStopSignalsBeforeChild(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Setenv("ETCD_ENDPOINTS", "http://127.0.0.1:1")
			t.Setenv("ETCD_USERNAME", "u")
			t.Setenv("ETCD_PASSWORD", "p")
			errs := newLines()
			done := make(chan error, 1)
			dir := t.TempDir()
			go func() {
				done <- run(context.Background(), append([]string{"-p", "/x", "-t", dir}, childArgs(dir, "serve")...), newLines(), errs)
			}()
			errs.containing(t, "connect to etcd failed")
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run after %v = %v, want nil", sig, err)
				}
			case <-time.After(waitLong):
				t.Fatalf("%v before the child started did not stop dispenser within %v", sig, waitLong)
			}
		})
	}
}

// TestUnusualSignalsForwarded: SIGPWR (LXC's shutdown) and SIGRTMIN+3
// (systemd's) reach the child, and each forward is logged at debug level
// (issue 7 item 14).
func TestUnusualSignalsForwarded(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir, "--log-level=debug"}, childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	for _, name := range []string{"PWR", "RTMIN+3"} {
		sig, _ := parseSig(name)
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		r.out.next(t, name)
		r.errs.containing(t, `msg="forwarded signal" signal=SIG`+name)
	}
}

// TestChildCannotRun: a command that is not found exits 127, one that is
// not executable 126, each with one message (issue 7 item 16).
func TestChildCannotRun(t *testing.T) {
	s := etcdtest.Start(t)
	for _, tc := range []struct {
		argv0 string
		code  int
	}{{"dispenser-no-such-command", 127}, {os.DevNull, 126}} {
		t.Run(tc.argv0, func(t *testing.T) {
			r := start(t, s, "-p", "/x", "-t", t.TempDir(), "--", tc.argv0)
			var stderr bytes.Buffer
			if got := report(&stderr, r.wait(t)); got != tc.code {
				t.Fatalf("exit status %d, want %d; stderr:\n%s%s", got, tc.code, r.errs.String(), stderr.String())
			}
			all := r.errs.String() + stderr.String()
			if n := strings.Count(all, "cannot run"); n != 1 || !strings.HasPrefix(stderr.String(), "dispenser: cannot run the child") {
				t.Fatalf("want one message naming %s, from dispenser; got %d mentions:\n%s", tc.argv0, n, all)
			}
		})
	}
}
