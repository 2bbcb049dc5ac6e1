//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperForeground is the "foreground" helper mode: see runHelper.
func helperForeground() int {
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	fmt.Printf("foreground %v\n", err == nil && fg == unix.Getpgrp())
	return 0
}

// gone reports whether pid has exited (it may linger as a zombie of ours
// when an earlier test made this process a subreaper).
func gone(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == 'Z'
}

// pidLine parses "<prefix> PID".
func pidLine(t testing.TB, line, prefix string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimPrefix(line, prefix+" "))
	if err != nil {
		t.Fatalf("child printed %q, want %q", line, prefix+" PID")
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		reapIfOurs(pid)
	})
	return pid
}

// TestLeftoversStopped: when the child exits by itself, what it left in its
// process group gets SIGTERM at once, and SIGKILL after the kill timeout if
// it ignores that; Wait returns once the group is empty (issue 7 item 16).
func TestLeftoversStopped(t *testing.T) {
	t.Run("exits on SIGTERM", func(t *testing.T) {
		c := startHelper(t, Options{KillTimeout: time.Hour}, "leave-group", "signals")
		gpid := pidLine(t, c.out.next(t), "grandchild")
		checkWait(t, c, waitTimeout)
		if !gone(gpid) {
			t.Fatalf("grandchild %d still runs after Wait returned", gpid)
		}
	})
	t.Run("ignores SIGTERM", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		c := startHelper(t, Options{KillTimeout: timeout}, "leave-group", "ignore-term")
		gpid := pidLine(t, c.out.next(t), "grandchild")
		start := time.Now()
		checkWait(t, c, waitTimeout)
		if !gone(gpid) {
			t.Fatalf("grandchild %d still runs after Wait returned", gpid)
		}
		if !strings.Contains(c.logs.String(), "killing its process group") {
			t.Errorf("no kill logged:\n%s", c.logs)
		}
		t.Logf("Wait returned %v after the grandchild was printed", time.Since(start))
	})
}

// checkWait waits for the child, which must exit 0, within limit.
func checkWait(t testing.TB, c *testChild, limit time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(limit):
		t.Fatalf("Wait did not return within %v", limit)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
}

// TestPdeathsig: a supervisor killed with SIGKILL takes its child with it
// (issue 7 item 16).
func TestPdeathsig(t *testing.T) {
	c := startHelper(t, Options{}, "supervise", "signals")
	cpid := pidLine(t, c.out.next(t), "child")
	c.out.expect(t, "ready")
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the supervised child to die with its supervisor", func() bool { return gone(cpid) })
}

func TestStartErrorCodes(t *testing.T) {
	dir := t.TempDir()
	script := dir + "/script"
	if err := os.WriteFile(script, []byte("no shebang\x00\x01"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv0 string
		code  int
		want  string
	}{
		{"dispenser-no-such-command", 127, `cannot run the child "dispenser-no-such-command": executable file not found in $PATH; check`},
		{dir + "/missing", 127, "no such file or directory; check the command's spelling and PATH"},
		{os.DevNull, 126, `cannot run the child "/dev/null": permission denied; check that it is an executable file`},
		{dir, 126, "; check that it is an executable file"},
		{script, 126, "exec format error; check that it is an executable file"},
	} {
		t.Run(tc.argv0, func(t *testing.T) {
			c, err := Start(Options{Argv: []string{tc.argv0}})
			if err == nil {
				_ = c.Stop(syscall.SIGKILL)
				t.Fatalf("Start(%s) = nil error", tc.argv0)
			}
			se, ok := err.(*StartError)
			if !ok {
				t.Fatalf("Start(%s) = %T %v, want *StartError", tc.argv0, err, err)
			}
			if se.ExitCode() != tc.code || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Start(%s) = %d %q, want %d and one line containing %q", tc.argv0, se.ExitCode(), err, tc.code, tc.want)
			}
		})
	}
}

// TestTerminalForeground: with Options.Terminal the child's group becomes
// the terminal's foreground group (issue 7 item 15). A real pseudo-terminal
// is the controlling terminal of a "supervise" helper in a new session.
func TestTerminalForeground(t *testing.T) {
	for _, terminal := range []bool{true, false} {
		t.Run(fmt.Sprintf("terminal=%v", terminal), func(t *testing.T) {
			pts := openPty(t)
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"foreground"}
			if terminal {
				args = append(args, "terminal")
			}
			out := newLineBuffer()
			cmd := exec.Command(exe, args...)
			cmd.Env = helperEnviron("supervise")
			cmd.Stdin, cmd.Stdout = pts, out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
			pidLine(t, out.next(t), "child")
			if got, want := out.next(t), fmt.Sprintf("foreground %v", terminal); got != want {
				t.Fatalf("child printed %q, want %q", got, want)
			}
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Fatalf("supervise helper: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("supervise helper did not exit within %v", waitTimeout)
			}
		})
	}
}

// openPty opens a new pseudo-terminal and returns its terminal side; the
// master side is closed at the end of the test.
func openPty(t testing.TB) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { pts.Close() })
	return pts
}
