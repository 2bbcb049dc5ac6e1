package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// checkExit fails the test unless err is an *ExitError with the given code
// and signal, found with errors.As as a caller would.
func checkExit(t testing.TB, err error, code int, sig syscall.Signal, msg string) {
	t.Helper()
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Wait() = %v (%T), want *ExitError", err, err)
	}
	if got, want := ee.ExitCode(), code; got != want {
		t.Errorf("ExitCode() = %d, want %d", got, want)
	}
	if got, want := ee.Signal(), sig; got != want {
		t.Errorf("Signal() = %v, want %v", got, want)
	}
	if got, want := ee.Error(), msg; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var coder interface{ ExitCode() int }
	if !errors.As(err, &coder) || coder.ExitCode() != code {
		t.Errorf("errors.As(err, ExitCode() int) does not give %d", code)
	}
}

func TestExitStatus(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 3, 137} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			c := startHelper(t, Options{}, "exit", strconv.Itoa(code))
			err := c.Wait()
			if code == 0 {
				if err != nil {
					t.Fatalf("Wait() = %v, want nil", err)
				}
				return
			}
			// 137 by exit, not by SIGKILL: Signal() must stay 0.
			checkExit(t, err, code, 0, "child exited with status "+strconv.Itoa(code))
		})
	}
}

func TestKilledBySignal(t *testing.T) {
	t.Parallel()
	c := startHelper(t, Options{}, "signals")
	c.out.expect(t, "ready")
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("Signal(SIGKILL) = %v", err)
	}
	checkExit(t, c.Wait(), 137, syscall.SIGKILL, "child killed by signal KILL")
}

func TestSignalForwarding(t *testing.T) {
	t.Parallel()
	c := startHelper(t, Options{}, "signals")
	c.out.expect(t, "ready")
	for _, s := range ForwardedSignals() {
		sig := s.(syscall.Signal)
		if sig == syscall.SIGTERM {
			continue // ends the helper; sent last
		}
		if err := c.Signal(sig); err != nil {
			t.Fatalf("Signal(%v) = %v", sig, err)
		}
		c.out.expect(t, "got "+sigString(sig))
	}
	// A second HUP is delivered too (reloads repeat).
	if err := c.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("Signal(SIGHUP) = %v", err)
	}
	c.out.expect(t, "got SIGHUP")
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal(SIGTERM) = %v", err)
	}
	c.out.expect(t, "got SIGTERM")
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
}

func TestSignalAfterExit(t *testing.T) {
	t.Parallel()
	c := startHelper(t, Options{}, "exit", "3")
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("Done() not closed within %v", waitTimeout)
	}
	err := c.Signal(syscall.SIGHUP)
	if !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit = %v, want error wrapping os.ErrProcessDone", err)
	}
	if want := "send SIGHUP to child " + strconv.Itoa(c.Pid()); !strings.Contains(err.Error(), want) {
		t.Errorf("Signal after exit = %q, want it to contain %q", err, want)
	}
	// Stop after exit returns Wait's result at once, whatever the timeout.
	checkExit(t, c.Stop(syscall.SIGTERM), 3, 0, "child exited with status 3")
	checkExit(t, c.Wait(), 3, 0, "child exited with status 3")
}

func TestStopGraceful(t *testing.T) {
	t.Parallel()
	c := startHelper(t, Options{KillTimeout: time.Minute}, "signals")
	c.out.expect(t, "ready")
	start := time.Now()
	// A SIGKILL would make Stop return an *ExitError with 137.
	if err := c.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("Stop(SIGTERM) = %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed >= time.Minute {
		t.Fatalf("Stop took %v, the whole kill timeout", elapsed)
	}
	c.out.expect(t, "got SIGTERM")
}

func TestStopKillsGroup(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	c := startHelper(t, Options{KillTimeout: timeout}, "ignore-term")
	line := c.out.next(t)
	gpid, err := strconv.Atoi(strings.TrimPrefix(line, "grandchild "))
	if err != nil {
		t.Fatalf("child printed %q, want \"grandchild PID\"", line)
	}
	t.Cleanup(func() { reapIfOurs(gpid) })
	c.out.expect(t, "ready")

	start := time.Now()
	err = c.Stop(syscall.SIGTERM)
	elapsed := time.Since(start)
	checkExit(t, err, 137, syscall.SIGKILL, "child killed by signal KILL")
	if elapsed < timeout {
		t.Errorf("Stop returned after %v, before the kill timeout %v", elapsed, timeout)
	}
	// The grandchild ignored SIGTERM too and was not signalled by Stop's
	// first step; only the group SIGKILL ends it.
	eventually(t, "grandchild to be killed", func() bool {
		state, _, ok := procStat(gpid)
		return !ok || state == 'Z'
	})
	if !strings.Contains(c.logs.String(), "killing the child's process group") {
		t.Errorf("supervisor log lacks the kill warning:\n%s", c.logs)
	}
}

// reapIfOurs reaps pid if it is a zombie child of the test process (it is
// when an earlier test made the test process a subreaper).
func reapIfOurs(pid int) {
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
		is   error
	}{
		{"no argv", Options{}, "no command given", nil},
		{"not found", Options{Argv: []string{"dispenser-no-such-command"}}, `cannot run the child "dispenser-no-such-command": `, exec.ErrNotFound},
		{"not executable", Options{Argv: []string{os.DevNull}}, `cannot run the child "/dev/null": `, nil},
		{"negative timeout", Options{Argv: []string{"true"}, KillTimeout: -time.Second}, "is negative", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Start(tt.opts)
			if err == nil {
				_ = c.Stop(syscall.SIGKILL)
				t.Fatalf("Start() error = nil, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start() error = %q, want it to contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Start() error = %v, want errors.Is %v", err, tt.is)
			}
		})
	}
}

func TestDefaultKillTimeout(t *testing.T) {
	t.Parallel()
	c := startHelper(t, Options{}, "exit", "0")
	if got, want := c.killTimeout, DefaultKillTimeout; got != want {
		t.Fatalf("kill timeout = %v, want %v", got, want)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
}
