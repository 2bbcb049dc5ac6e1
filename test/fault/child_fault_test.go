package fault_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// TestFault7Child: the child crashes (dispenser exits with its status),
// ignores SIGTERM (--kill-timeout, then SIGKILL: 137), or leaves orphans
// that die: with --reap, or as PID 1 of a new PID namespace, dispenser
// must reap them so that no zombie stays, and still mirror the child's
// exit status.
func TestFault7Child(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	put(t, c.Client(t), "/k/a", "1")
	start := func(t *testing.T, wrap []string, mode string, extra ...string) (*dispenser, string) {
		dir := t.TempDir()
		args := append([]string{"-p", "/k", "-t", dir, "-s", "HUP"}, extra...)
		d := startDispenser(t, c.Endpoints(), wrap, append(args, childArgv(dir, mode)...)...)
		if ln, _ := d.out.next(t, "ready"); ln.text != "ready a=1" {
			t.Fatalf("child started with %q", ln.text)
		}
		return d, dir
	}

	for _, tc := range []struct {
		mode string
		want int
	}{{"exit=3", 3}, {"exit=0", 0}, {modeKillSelf, 128 + int(syscall.SIGKILL)}} {
		t.Run("crash "+tc.mode, func(t *testing.T) {
			d, _ := start(t, nil, tc.mode)
			if got := d.exit(t); got != tc.want {
				t.Fatalf("child %s: dispenser exit status %d, want %d", tc.mode, got, tc.want)
			}
		})
	}

	t.Run("ignores SIGTERM", func(t *testing.T) {
		d, _ := start(t, nil, modeIgnoreTerm, "--kill-timeout=500ms")
		sent := time.Now()
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		d.out.next(t, "TERM") // forwarded, and ignored
		got := d.exit(t)
		took := time.Since(sent)
		if want := 128 + int(syscall.SIGKILL); got != want {
			t.Fatalf("dispenser exit status %d, want %d (child SIGKILLed after --kill-timeout)", got, want)
		}
		if took < 500*time.Millisecond || took > 30*time.Second {
			t.Fatalf("dispenser exited %v after SIGTERM with --kill-timeout=500ms", took)
		}
		t.Logf("fault 7 (child ignores SIGTERM): exit %d %v after SIGTERM", got, took.Round(time.Millisecond))
	})

	t.Run("orphans with --reap", func(t *testing.T) {
		d, _ := start(t, nil, modeOrphan, "--reap")
		checkOrphanReaped(t, d, d.Pid())
	})

	t.Run("orphans as PID 1", func(t *testing.T) {
		if testing.Short() {
			t.Skip("needs a new PID namespace")
		}
		if err := exec.Command("unshare", "--pid", "--fork", "true").Run(); err != nil {
			t.Skipf("unshare --pid --fork: %v; the --reap case covers reaping", err)
		}
		d, _ := start(t, []string{"unshare", "--pid", "--fork"}, modeOrphan)
		pids := waitProcs(t, "dispenser under unshare", func(p proc) bool { return p.ppid == d.Pid() })
		checkOrphanReaped(t, d, pids[0])
	})
}

// checkOrphanReaped finds the child's orphaned sleep among the children of
// dispenser (pid), kills it, checks that it does not stay a zombie, then
// makes the child exit with 7 (SIGUSR2, forwarded by dispenser) and checks
// that dispenser exits with 7 and left no zombie behind.
func checkOrphanReaped(t *testing.T, d *dispenser, pid int) {
	t.Helper()
	d.out.next(t, "orphaned")
	orphans := waitProcs(t, "orphan adopted by dispenser", func(p proc) bool {
		return p.ppid == pid && p.cmdline == "sleep\x00"+orphanArg+"\x00"
	})
	orphan := orphans[0]
	t.Cleanup(func() { // if the test failed before killing it
		if p, ok := readProc(orphan); ok && p.cmdline == "sleep\x00"+orphanArg+"\x00" {
			syscall.Kill(orphan, syscall.SIGKILL)
		}
	})
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitGone(t, orphan)
	t.Logf("fault 7 (orphan adopted by dispenser pid %d): killed orphan reaped after %v", pid, time.Since(killed))
	if z := zombiesOf(pid); len(z) != 0 {
		t.Fatalf("zombies %v under dispenser", z)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if got, want := d.exit(t), 7; got != want {
		t.Fatalf("dispenser exit status %d, want the child's %d", got, want)
	}
}

// proc is what the tests need from /proc/<pid>.
type proc struct {
	pid, ppid int
	state     byte
	cmdline   string
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return proc{pid: pid, ppid: ppid, state: f[0][0], cmdline: string(cmd)}, true
}

func procs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if p, ok := readProc(pid); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// waitProcs polls /proc until some process matches and returns the pids
// that do, failing the test after waitLong.
func waitProcs(t *testing.T, what string, match func(proc) bool) []int {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		var pids []int
		for _, p := range procs() {
			if match(p) {
				pids = append(pids, p.pid)
			}
		}
		if len(pids) > 0 {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process %s after %v", what, waitLong)
		}
		pause(10 * time.Millisecond)
	}
}

// waitGone polls until process pid no longer exists (it was reaped),
// failing the test after waitLong, e.g. if it stays a zombie.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		p, ok := readProc(pid)
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still there after %v: state %c, parent %d (not reaped)", pid, waitLong, p.state, p.ppid)
		}
		pause(10 * time.Millisecond)
	}
}

func zombiesOf(pid int) []int {
	var z []int
	for _, p := range procs() {
		if p.ppid == pid && p.state == 'Z' {
			z = append(z, p.pid)
		}
	}
	return z
}
