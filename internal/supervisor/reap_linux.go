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

// reapUntilExit reaps every exited child of this process other than c and
// those in c.owned, and returns as soon as c itself has exited, leaving c's
// zombie for exec.Cmd.Wait to collect.
//
// Why peek first: a plain wait4(-1) could collect c's status before
// exec.Cmd.Wait does, losing it. waitid with WNOWAIT reports an exited
// child without reaping it; only children that are neither c nor owned
// are then reaped, by pid. Since nothing else reaps c, this loop always
// sees c exit.
//
// An owned child that has exited stays a zombie until its owner waits for
// it, and until then waitid may keep reporting it: rather than peek again
// at once (a busy loop), the loop blocks until the owner releases it or c
// exits.
func (c *Child) reapUntilExit() {
	var exited chan struct{}
	if c.owned != nil {
		// Sees c exit while the loop waits for a release. It returns
		// once c has exited (or cannot be waited for), before c is
		// reaped, so it is waited for here and never sees a reused pid.
		exited = make(chan struct{})
		go func() { c.awaitExit(); close(exited) }()
		defer func() { <-exited }()
	}
	for {
		pid, err := peekExited(0)
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
		if released := c.owned.decide(pid, func() { c.reapPid(pid) }); released != nil {
			select {
			case <-released:
			case <-exited:
				return
			}
		}
	}
}

// reapExited reaps, without blocking, every child that has already exited
// and is not owned, stopping early at an owned one. It is called after c
// has been reaped, when no status of c's can be lost.
func (c *Child) reapExited() {
	for {
		pid, err := peekExited(unix.WNOHANG)
		if err != nil || pid <= 0 {
			return
		}
		reaped := false
		if c.owned.decide(pid, func() { reaped = c.reapPid(pid) }) != nil || !reaped {
			return
		}
	}
}

// reapPid reaps the exited child pid and reports whether it did.
func (c *Child) reapPid(pid int) bool {
	var ws unix.WaitStatus
	got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
	for errors.Is(err, unix.EINTR) {
		got, err = unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
	}
	if err != nil || got != pid {
		c.log.Debug("reap orphan", "pid", pid, "err", err)
		return false
	}
	c.logReaped(pid, ws)
	return true
}

func (c *Child) logReaped(pid int, ws unix.WaitStatus) {
	if ws.Signaled() {
		c.log.Debug("reaped orphan", "pid", pid, "signal", sigString(ws.Signal()))
		return
	}
	c.log.Debug("reaped orphan", "pid", pid, "status", ws.ExitStatus())
}

// peekExited returns the pid of a child of this process that has exited,
// without reaping it. It blocks until there is one, or with WNOHANG in
// options returns 0 when there is none.
func peekExited(options int) (int, error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, options|unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
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
