//go:build linux

package supervisor

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests in this file make the test process a child subreaper for the
// rest of its life, and while they run they wait for any child of the test
// process. They therefore do not call t.Parallel: parallel tests only
// resume (and start children) after all serial tests have finished.

// helperOrphan is the "orphan" helper mode: see runHelper.
func helperOrphan() int {
	p, err := spawnHelper("exit", nil, false, "0")
	if err != nil {
		return 106
	}
	// Wait until the grandchild has exited, but leave its zombie for our
	// parent (a subreaper) to inherit and reap.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		return 107
	}
	fmt.Printf("orphan %d\n", p.Pid)
	return 0
}

func orphanPid(t testing.TB, c *testChild) int {
	t.Helper()
	line := c.out.next(t)
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "orphan "))
	if err != nil {
		t.Fatalf("child printed %q, want \"orphan PID\"", line)
	}
	return pid
}

// reapedLogged reports whether the supervisor logged reaping pid.
func reapedLogged(c *testChild, pid int) bool {
	return strings.Contains(c.logs.String(), fmt.Sprintf(`msg="reaped orphan" component=supervisor pid=%d `, pid))
}

// The child exits right after its own child has exited unreaped: that
// zombie is reparented to us (only because we are a subreaper; otherwise
// init would adopt it) and must be reaped, and the direct child's status
// must still reach Wait.
func TestReapOrphanOfExitedChild(t *testing.T) {
	c := startHelper(t, Options{Reap: true}, "orphan")
	gpid := orphanPid(t, c)
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if !reapedLogged(c, gpid) {
		t.Errorf("supervisor log does not show orphan %d reaped:\n%s", gpid, c.logs)
	}
	eventually(t, "no zombie children", func() bool { return len(zombieChildren(t)) == 0 })
}

// An orphan that is reparented to us while the child keeps running is
// reaped right away, and the child's own exit is not taken by the reaper.
func TestReapOrphanWhileChildRuns(t *testing.T) {
	c := startHelper(t, Options{Reap: true}, "orphan-running")
	gpid := orphanPid(t, c)
	c.out.expect(t, "ready")
	eventually(t, fmt.Sprintf("orphan %d to be reaped", gpid), func() bool { return reapedLogged(c, gpid) })
	if state, ppid, ok := procStat(gpid); ok && ppid == syscall.Getpid() {
		t.Errorf("orphan %d still our child in state %c after being reaped", gpid, state)
	}
	select {
	case <-c.Done():
		t.Fatalf("child exited early: %v", c.Wait())
	default:
	}
	if err := c.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("Signal(SIGHUP) = %v", err)
	}
	c.out.expect(t, "got SIGHUP")
	if err := c.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("Stop(SIGTERM) = %v, want nil", err)
	}
	eventually(t, "no zombie children", func() bool { return len(zombieChildren(t)) == 0 })
}

// With Reap on, exit statuses are still mirrored exactly.
func TestReapExitStatus(t *testing.T) {
	c := startHelper(t, Options{Reap: true}, "exit", "3")
	checkExit(t, c.Wait(), 3, 0, "child exited with status 3")

	k := startHelper(t, Options{Reap: true}, "signals")
	k.out.expect(t, "ready")
	if err := k.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("Signal(SIGKILL) = %v", err)
	}
	checkExit(t, k.Wait(), 137, syscall.SIGKILL, "child killed by signal KILL")
}
