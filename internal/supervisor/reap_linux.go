//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes orphaned descendants of this process be
// reparented to it rather than to init.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	return nil
}

// reapUntilExit reaps every exited child of this process other than c,
// and returns as soon as c itself has exited, leaving c's zombie for
// exec.Cmd.Wait to collect.
//
// Why peek first: a plain wait4(-1) could collect c's status before
// exec.Cmd.Wait does, losing it. waitid with WNOWAIT reports an exited
// child without reaping it; only children that are not c are then reaped,
// by pid. Since nothing else reaps c, this loop always sees c exit.
func (c *Child) reapUntilExit() {
	for {
		pid, err := peekExited()
		if err != nil {
			// Only if someone else reaped c; exec.Cmd.Wait will report it.
			c.log.Warn("wait for children", "err", err)
			return
		}
		if pid == c.pid {
			return
		}
		if pid <= 0 {
			// Cannot happen with a sane siginfo layout; never reap blindly.
			c.log.Warn("waitid returned no pid; not reaping orphans", "pid", pid)
			return
		}
		c.reapPid(pid)
	}
}

// reapExited reaps, without blocking, every child that has already exited.
// It is called after c has been reaped, when no status can be lost.
func (c *Child) reapExited() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		c.logReaped(pid, ws)
	}
}

// reapPid reaps the exited child pid.
func (c *Child) reapPid(pid int) {
	var ws unix.WaitStatus
	got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
	for errors.Is(err, unix.EINTR) {
		got, err = unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
	}
	if err != nil || got != pid {
		c.log.Debug("reap orphan", "pid", pid, "err", err)
		return
	}
	c.logReaped(pid, ws)
}

func (c *Child) logReaped(pid int, ws unix.WaitStatus) {
	if ws.Signaled() {
		c.log.Debug("reaped orphan", "pid", pid, "signal", sigString(ws.Signal()))
		return
	}
	c.log.Debug("reaped orphan", "pid", pid, "status", ws.ExitStatus())
}

// peekExited blocks until some child of this process has exited and
// returns its pid, without reaping it.
func peekExited() (int, error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("waitid: %w", err)
		}
		return siginfoPid(&info), nil
	}
}

// siginfoPid returns si_pid from a siginfo_t filled in by waitid. The
// struct starts with three int32 fields (their order varies by
// architecture), then a union aligned to the pointer size whose SIGCHLD
// member starts with si_pid: offset 16 on 64-bit and 12 on 32-bit systems
// (the kernel's __ARCH_SI_PREAMBLE_SIZE). x/sys/unix leaves the union
// opaque.
func siginfoPid(info *unix.Siginfo) int {
	const ptrSize = unsafe.Sizeof(uintptr(0))
	const offset = (3*4 + ptrSize - 1) &^ (ptrSize - 1)
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), offset)))
}

// awaitExit blocks until c has exited, leaving it unreaped (its pid, the
// group id, stays taken) for exec.Cmd.Wait to collect.
func (c *Child) awaitExit() {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, c.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return // on error, exec.Cmd.Wait reports it
		}
	}
}

// Foreground reports whether f is a terminal whose foreground process
// group is this process's group: then Options.Terminal can hand it to the
// child.
func Foreground(f *os.File) bool {
	pgrp, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// sysProcAttr starts the child in a new process group (the terminal's
// foreground group if term is set), SIGKILLed when this process dies.
func sysProcAttr(term *os.File) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if term != nil {
		// Ctty is a descriptor of this process here (see SysProcAttr).
		attr.Foreground, attr.Ctty = true, int(term.Fd())
	}
	return attr
}

func systemSignalNames() []namedSignal {
	return []namedSignal{{"STKFLT", syscall.SIGSTKFLT}, {"PWR", syscall.SIGPWR}}
}
