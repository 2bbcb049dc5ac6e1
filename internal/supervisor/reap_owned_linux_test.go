//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"golang.org/x/sys/unix"
)

// Like those in reap_linux_test.go, these tests make the test process a
// child subreaper for the rest of its life: the file name sorts after the
// tests that need it not to be one (a leftover of a Child without Reap is
// then reparented to init, which reaps it).

// Processes that the program runs through internal/command while a
// reaping Child runs keep their exit status: the reaper leaves them to
// os/exec. Some of them leave an orphan behind (a background process of
// the shell, reparented to the test process as subreaper), which is still
// reaped, as is the orphan the supervised child makes.
func TestReapLeavesOwnedCommands(t *testing.T) {
	var owned Owned
	command.SetStartHook(owned.Start)
	t.Cleanup(func() { command.SetStartHook(nil) })

	c := startHelper(t, Options{Reap: true, Owned: &owned}, "orphan-running")
	gpid := orphanPid(t, c)
	c.out.expect(t, "ready")

	type want struct {
		text, out, err string
	}
	kinds := []want{
		{"true", "", ""},
		{"sh -c 'echo out; exit 3'", "", "exit status 3"},
		{"sh -c 'true & echo bg'", "bg", ""}, // leaves an orphan
	}
	const n, workers = 200, 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k := kinds[i%len(kinds)]
				out, err := command.Capture(ctx, command.Exec{}, k.text, nil, nil)
				gotErr := ""
				if err != nil {
					gotErr = err.Error()
				}
				if out != k.out || gotErr != k.err {
					errs <- fmt.Errorf("Capture(%q) = %q, %q; want %q, %q", k.text, out, gotErr, k.out, k.err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d commands did not get their own exit status", failed, n)
	}

	eventually(t, fmt.Sprintf("orphan %d to be reaped", gpid), func() bool { return reapedLogged(c, gpid) })
	eventually(t, "no zombie children (the shells' orphans reaped)", func() bool { return len(zombieChildren(t)) == 0 })
	select {
	case <-c.Done():
		t.Fatalf("child exited early: %v", c.Wait())
	default:
	}
	if err := c.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("Stop(SIGTERM) = %v, want nil", err)
	}
}

// An owned process that has exited but not been waited for yet is left
// alone without a busy loop, both while the child runs and after it has
// exited; once it is released, the reaper goes on reaping orphans; the
// child's exit is seen while an owned zombie is pending.
func TestReapWaitsForOwnedRelease(t *testing.T) {
	var owned Owned
	c := startHelper(t, Options{Reap: true, Owned: &owned}, "signals")
	c.out.expect(t, "ready")

	a, releaseA, _ := startOwned(t, &owned, "exit", "5")
	awaitZombie(t, a.Process.Pid)
	// The reaper sees the zombie within this interval; were it to peek
	// again and again, it would burn about the whole interval in CPU.
	const interval = 500 * time.Millisecond
	before := cpuTime(t)
	time.Sleep(interval) // a measuring interval, not a synchronisation
	if used := cpuTime(t) - before; used > interval/4 {
		t.Errorf("process used %v of CPU in %v with an owned zombie pending; the reaper spins", used, interval)
	}
	checkZombie(t, a.Process.Pid)

	// An orphan that appears meanwhile is reaped once a is released.
	b, releaseB, out := startOwned(t, &owned, "orphan")
	checkOwnedExit(t, a, 5)
	releaseA()
	checkOwnedExit(t, b, 0)
	releaseB()
	var gpid int
	if _, err := fmt.Sscanf(out.String(), "orphan %d", &gpid); err != nil {
		t.Fatalf("owned helper printed %q, want \"orphan PID\"", out)
	}
	eventually(t, fmt.Sprintf("orphan %d to be reaped", gpid), func() bool { return reapedLogged(c, gpid) })

	// The child's exit is noticed although an owned zombie is pending,
	// and that zombie is still left alone afterwards.
	d, releaseD, _ := startOwned(t, &owned, "exit", "7")
	defer releaseD()
	awaitZombie(t, d.Process.Pid)
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatal("child's exit not seen while an owned zombie was pending")
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	checkZombie(t, d.Process.Pid)
	checkOwnedExit(t, d, 7)
}

// startOwned starts the test binary in a helper mode through o, as a
// program's own process; out is its stdout.
func startOwned(t *testing.T, o *Owned, mode string, args ...string) (cmd *exec.Cmd, release func(), out *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(exe, args...)
	cmd.Env = helperEnviron(mode)
	out = &syncBuffer{}
	cmd.Stdout = out
	release, err = o.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, release, out
}

// awaitZombie waits until our child pid has exited, without reaping it.
func awaitZombie(t *testing.T, pid int) {
	t.Helper()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid(%d) = %v", pid, err)
	}
}

func checkZombie(t *testing.T, pid int) {
	t.Helper()
	if state, ppid, ok := procStat(pid); !ok || state != 'Z' || ppid != os.Getpid() {
		t.Fatalf("owned process %d: state %c, parent %d, found %v; want our zombie", pid, state, ppid, ok)
	}
}

func checkOwnedExit(t *testing.T, cmd *exec.Cmd, code int) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if code == 0 && err != nil || code != 0 && (!errors.As(err, &ee) || ee.ExitCode() != code) {
		t.Fatalf("owned process %d: Wait() = %v, want exit status %d", cmd.Process.Pid, err, code)
	}
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
