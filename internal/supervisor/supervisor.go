// Package supervisor runs one child process for a container entrypoint
// (often PID 1): it starts the process in its own process group (the
// terminal's foreground group when asked), as another user if asked
// (Options.Credential, LookupCredential), sends it signals (reloads and
// forwarded signals), stops it with a grace period followed by SIGKILL to
// the whole group, cleans up what the child left in its group, reports how
// it exited, and can reap orphaned zombies as a child subreaper. The child
// is SIGKILLed by the kernel if this process dies first (Pdeathsig).
//
// It deliberately does not restart the child, install signal handlers (the
// caller owns os/signal and decides what to forward; ForwardedSignals gives
// the usual set), re-raise the child's fatal signal, or exit the process.
// Mirroring the child's exit is the caller's choice: ExitError.ExitCode
// gives the child's exit code, or 128+n for a child killed by signal n.
//
// The package is Linux-first: Options.Reap is only supported on Linux.
package supervisor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// DefaultKillTimeout is the grace period Stop uses when
// Options.KillTimeout is zero.
const DefaultKillTimeout = 10 * time.Second

// Options configures Start.
type Options struct {
	// Argv is the command and its arguments; required. Argv[0] is looked
	// up in the PATH of this process (not of Env) unless it contains a
	// slash.
	Argv []string

	// Env is the child's environment. Nil means it inherits this
	// process's environment.
	Env []string

	// Stdin, Stdout and Stderr are the child's standard streams. Nil
	// means the null device, as in os/exec; pass os.Stdin, os.Stdout and
	// os.Stderr to share this process's streams. An *os.File is handed to
	// the child directly; any other value is copied through a pipe, and
	// Wait waits up to KillTimeout after the child's exit for that pipe
	// to reach EOF (a grandchild may hold it open).
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// KillTimeout is how long Stop waits after its signal before it sends
	// SIGKILL to the child's process group. Zero means
	// DefaultKillTimeout; negative values are rejected.
	KillTimeout time.Duration

	// Reap makes this process a child subreaper
	// (prctl PR_SET_CHILD_SUBREAPER) and reaps every orphan that is
	// reparented to it while the child runs. The caller should set it
	// when running as PID 1, where the kernel already reparents all
	// orphans to this process. Subreaper status lasts for the rest of the
	// process's life. While a Child with Reap runs, it waits for any
	// child of this process: run at most one such Child per process, and
	// start other child processes only through Owned (os/exec would
	// otherwise lose their exit status). Orphans that exit after the child
	// itself has exited are not reaped; the caller is expected to exit
	// soon after. Linux only: Start fails elsewhere.
	Reap bool

	// Owned, with Reap, lists the processes this program starts and waits
	// for itself: they are left to their owner, not reaped. While such a
	// process has exited and its owner has not yet released it, other
	// orphans wait to be reaped (the kernel reports exited children one at
	// a time). Nil means every exited child other than the Child is
	// reaped.
	Owned *Owned

	// Terminal, when set, is a terminal (usually os.Stdin) whose
	// foreground process group the child's new group becomes, so that an
	// interactive child can read it and gets Ctrl-C and Ctrl-Z itself.
	// This process must be in the terminal's foreground group. Nil leaves
	// the terminal alone.
	Terminal *os.File

	// Credential, when set, is the uid, gid and supplementary groups the
	// child runs as (LookupCredential makes one from "USER[:GROUP]"),
	// while this process keeps its own; switching needs root
	// (CAP_SETUID and CAP_SETGID), else Start fails. The environment
	// (HOME, USER) is not changed. Nil runs the child as this process.
	Credential *syscall.Credential

	// Logger receives debug and warning logs, tagged with
	// component=supervisor. Nil discards them.
	Logger *slog.Logger
}

// Child is a started child process. Its methods are safe for concurrent
// use.
type Child struct {
	cmd         *exec.Cmd
	pid         int
	killTimeout time.Duration
	reap        bool
	owned       *Owned
	log         *slog.Logger

	done chan struct{} // closed after err is set
	err  error         // result for Wait
}

// Start starts opts.Argv as the leader of a new process group and returns
// once the process is running. A goroutine owned by the returned Child
// waits for the process; it ends when the process has exited, been reaped,
// what it left in its process group has been stopped (see Wait) and its
// output pipes have closed, which is when Done is closed. The caller must
// eventually let the child exit (Stop does this) so that the goroutine
// ends.
//
// The child gets SIGKILL from the kernel if this process dies (Pdeathsig).
// The kernel sends it when the thread that started the child ends, so that
// thread is locked to the goroutine that waits for the child and lives as
// long as the child does.
//
// Because the child leads its own process group, signals that a terminal
// sends to its foreground group (Ctrl-C) reach only this process, which
// must forward them; ForwardedSignals lists them. With Options.Terminal
// the child's group is the foreground group instead.
//
// A command that cannot be executed returns a *StartError, whose ExitCode
// is 127 (not found) or 126 (found but not executable).
func Start(opts Options) (*Child, error) {
	if len(opts.Argv) == 0 {
		return nil, errors.New("start child: no command given; pass the command to run")
	}
	timeout := opts.KillTimeout
	if timeout < 0 {
		return nil, fmt.Errorf("start %s: kill timeout %v is negative; use zero for the default", opts.Argv[0], timeout)
	}
	if timeout == 0 {
		timeout = DefaultKillTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "supervisor")
	if opts.Reap {
		if err := becomeSubreaper(); err != nil {
			return nil, fmt.Errorf("start %s: %w", opts.Argv[0], err)
		}
	}

	cmd := exec.Command(opts.Argv[0], opts.Argv[1:]...)
	cmd.Env = opts.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cmd.SysProcAttr = sysProcAttr(opts.Terminal)
	cmd.SysProcAttr.Credential = opts.Credential
	cmd.WaitDelay = timeout
	c := &Child{
		cmd:         cmd,
		killTimeout: timeout,
		reap:        opts.Reap,
		owned:       opts.Owned,
		log:         log,
		done:        make(chan struct{}),
	}
	started := make(chan error, 1)
	go c.run(started)
	if err := <-started; err != nil {
		return nil, startError(opts.Argv[0], err)
	}
	attrs := []any{"pid", c.pid, "argv", opts.Argv, "reap", opts.Reap, "foreground", opts.Terminal != nil}
	if cred := opts.Credential; cred != nil {
		attrs = append(attrs, "uid", cred.Uid, "gid", cred.Gid, "groups", cred.Groups)
	}
	log.Info("child started", attrs...)
	return c, nil
}

// run starts the child and waits for it on one locked OS thread, the one
// Pdeathsig is tied to. It reports the start on started.
func (c *Child) run(started chan<- error) {
	runtime.LockOSThread()
	if err := c.cmd.Start(); err != nil {
		runtime.UnlockOSThread()
		started <- err
		return
	}
	c.pid = c.cmd.Process.Pid
	started <- nil
	c.wait()
	runtime.UnlockOSThread()
}

// Pid returns the child's process ID, which is also its process group ID.
func (c *Child) Pid() int { return c.pid }

// Done returns a channel that is closed once the child has exited and been
// reaped, and Wait's result is known.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for the child to exit. It returns nil if the child exited with
// status 0, an *ExitError if it exited with another status or was killed by
// a signal, and another error only if waiting itself failed. Every call
// returns the same result.
func (c *Child) Wait() error {
	<-c.done
	return c.err
}

// Signal sends sig to the child process (not to its group). Once the child
// has been reaped it sends nothing and returns an error wrapping
// os.ErrProcessDone, so a recycled pid is never signalled.
func (c *Child) Signal(sig syscall.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("send %s to child %d: %w", sigString(sig), c.pid, err)
	}
	return nil
}

// Stop stops the child and returns the same as Wait:
//
//  1. It sends sig to the child process (not to its group), so that a
//     daemon such as nginx or postgres can shut its workers down itself.
//  2. It waits up to the kill timeout for the child to exit.
//  3. If the child is still running, it sends SIGKILL to the child's
//     whole process group and to the child itself (in case the child
//     left its group), and waits for it to exit.
//
// A child that exits within the timeout is not sent SIGKILL. Stop on a
// child that has already exited just returns Wait's result. Stop may be
// called concurrently with itself and the other methods.
func (c *Child) Stop(sig syscall.Signal) error {
	// (1)
	if err := c.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.log.Warn("could not signal child; will kill it after the timeout", "pid", c.pid, "err", err)
	}
	// (2)
	timer := time.NewTimer(c.killTimeout)
	defer timer.Stop()
	select {
	case <-c.done:
		return c.err
	case <-timer.C:
	}
	// (3)
	c.log.Warn("child did not exit in time", "pid", c.pid, "timeout", c.killTimeout)
	c.Kill()
	return c.Wait()
}

// Kill sends SIGKILL to the child's process group and to the child, at
// once, without waiting. It does nothing once the child has been reaped.
// A pending Stop returns soon after.
func (c *Child) Kill() {
	select {
	case <-c.done:
		return // reaped: the pid may have been reused
	default:
	}
	c.log.Warn("killing the child's process group", "pid", c.pid)
	// The group outlives its leader while members remain, and its id
	// cannot be reused meanwhile, so this also catches grandchildren.
	if err := syscall.Kill(-c.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		c.log.Warn("kill process group", "pid", c.pid, "err", err)
	}
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.log.Warn("kill child", "pid", c.pid, "err", err)
	}
}

// wait waits for the child (and, with Reap, for every other child of this
// process) until the child has exited, then stops what it left in its
// process group.
func (c *Child) wait() {
	defer close(c.done)
	if c.reap {
		c.reapUntilExit()
	} else {
		c.awaitExit()
	}
	// The exited child is not reaped yet, so its pid (the group id) cannot
	// be reused: the group signal reaches only what the child left.
	termGroup := syscall.Kill(-c.pid, syscall.SIGTERM)
	deadline := time.Now().Add(c.killTimeout)
	err := c.cmd.Wait()
	if c.reap {
		c.reapExited()
	}
	c.err = c.result(err)
	c.log.Debug("child exited", "pid", c.pid, "err", c.err)
	if termGroup == nil {
		c.stopLeftovers(deadline)
	}
}

// stopLeftovers waits until the child's process group is empty, the
// processes in it having had SIGTERM, and SIGKILLs the group at deadline.
// The group id could only be reused once the group is empty, which is
// when this stops signalling it.
func (c *Child) stopLeftovers(deadline time.Time) {
	if !c.groupAlive(c.pid) {
		return
	}
	c.log.Info("child exited and left processes in its group; sent them SIGTERM",
		"pid", c.pid, "kill_in", time.Until(deadline).Round(time.Millisecond))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for c.groupAlive(c.pid) {
		switch {
		case time.Now().Before(deadline):
		case !killed:
			c.log.Warn("processes left by the child did not exit in time; killing its process group", "pid", c.pid)
			if err := syscall.Kill(-c.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				c.log.Warn("kill process group", "pid", c.pid, "err", err)
			}
			killed, deadline = true, time.Now().Add(leftoverReapWait)
		default: // killed, but not reaped by whoever is their parent now
			c.log.Warn("processes left by the child are still not reaped; not waiting for them", "pid", c.pid)
			return
		}
		<-tick.C
	}
}

// leftoverReapWait bounds the wait for SIGKILLed leftovers to disappear
// (their new parent must reap them).
const leftoverReapWait = 5 * time.Second

// groupAlive reports whether process group pgid has members left, after
// reaping those of them that are this process's exited children.
func (c *Child) groupAlive(pgid int) bool {
	if c.reap {
		c.reapExited()
	}
	return syscall.Kill(-pgid, 0) == nil
}

// result converts the error from exec.Cmd.Wait to Wait's contract.
func (c *Child) result(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return exitErrorFrom(ws)
		}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// The child exited 0, but something it started kept its output
		// pipe open past the kill timeout. The exit is what counts.
		c.log.Warn("child exited but its output stayed open; closed it", "pid", c.pid)
		return nil
	}
	return fmt.Errorf("wait for child %d: %w", c.pid, err)
}

// StartError reports a command that could not be started. Its ExitCode
// follows the shell: 127 when the command was not found, 126 when it was
// found but could not be executed, 1 for any other failure to start.
type StartError struct {
	Argv0 string
	Err   error
	code  int
}

var _ interface{ ExitCode() int } = (*StartError)(nil)

func startError(argv0 string, err error) *StartError {
	code := 1
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		code = 127
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR),
		errors.Is(err, syscall.ETXTBSY), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
		code = 126
	}
	return &StartError{Argv0: argv0, Err: err, code: code}
}

// Error says what failed and what to check, on one line.
func (e *StartError) Error() string {
	var hint string
	switch e.code {
	case 127:
		hint = "; check the command's spelling and PATH"
	case 126:
		hint = "; check that it is an executable file (mode +x, a valid binary or #! line)"
	}
	// exec errors already name the command; do not repeat it.
	msg := e.Err.Error()
	var pe *fs.PathError
	var ee *exec.Error
	switch {
	case errors.As(e.Err, &ee):
		msg = fmt.Sprintf("%q: %v", ee.Name, ee.Err)
	case errors.As(e.Err, &pe):
		msg = fmt.Sprintf("%q: %v", pe.Path, pe.Err)
	}
	return "cannot run the child " + msg + hint
}

func (e *StartError) Unwrap() error { return e.Err }

// ExitCode returns 127, 126 or 1 as described on StartError.
func (e *StartError) ExitCode() int { return e.code }

// ExitError reports a child that exited with a non-zero status or was
// killed by a signal.
type ExitError struct {
	code int
	sig  syscall.Signal
}

var (
	_ error                       = (*ExitError)(nil)
	_ interface{ ExitCode() int } = (*ExitError)(nil)
)

func exitErrorFrom(ws syscall.WaitStatus) *ExitError {
	if ws.Signaled() {
		return &ExitError{code: 128 + int(ws.Signal()), sig: ws.Signal()}
	}
	return &ExitError{code: ws.ExitStatus()}
}

// ExitCode returns the child's exit status, or 128+n if it was killed by
// signal n (the shell convention; 137 for SIGKILL). It is meant to be used
// as this process's own exit code.
func (e *ExitError) ExitCode() int { return e.code }

// Signal returns the signal that killed the child, or 0 if it exited
// normally.
func (e *ExitError) Signal() syscall.Signal { return e.sig }

// Error returns "child exited with status 3" or "child killed by signal
// TERM".
func (e *ExitError) Error() string {
	if e.sig != 0 {
		return "child killed by signal " + signalName(e.sig)
	}
	return fmt.Sprintf("child exited with status %d", e.code)
}
