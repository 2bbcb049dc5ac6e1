package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Shell is an interactive process started from an exec (spec §4.9): no
// script, its argv is SplitWords(e.Command); user, group, workDir, env
// and envInherit apply as for scripts; it runs in its own process group
// and starts through the StartHook like every other process of this
// package.
//
// Stdin, Stdout and Stderr are its standard streams. Read Stdout and
// Stderr until EOF (Wait closes them at the end, see Wait); close Stdin to
// send it EOF.
type Shell struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	Stderr io.Reader

	ctx     context.Context
	cmd     *exec.Cmd
	release func()
	outs    [2]*pipeReader

	once sync.Once
	code int
	err  error
}

// StartShell starts e.Command (its words; "sudo -E" first when e.Sudo and
// the euid is not 0) with the environment of a script (environ when
// e.EnvInherit, then e.Env, then env; PATH defaulted), e.User and e.Group
// and e.WorkDir, in its own process group, which is killed when ctx is
// done. An empty e.Command or a container exec is an error, as is a
// failure to start.
func StartShell(ctx context.Context, e Exec, env map[string]string, environ []string) (*Shell, error) {
	if e.ContainerImage != "" {
		return nil, errors.New("exec.containerImage is not supported for shells yet; remove it from the shell exec")
	}
	args, err := SplitWords(e.Command)
	if err != nil {
		return nil, fmt.Errorf("split shell command %q: %w", e.Command, err)
	}
	if len(args) == 0 {
		return nil, errors.New("shell command is empty; set shell.command to a program such as /bin/sh")
	}
	if e.Sudo && os.Geteuid() != 0 {
		args = append([]string{"sudo", "-E"}, args...)
	}
	cmd, err := newCmd(ctx, e, script{exec: e, env: env, inherited: environ}.environ(), args)
	if err != nil {
		return nil, err
	}
	cmd.WaitDelay = 0 // Wait below bounds the pipes itself
	s := &Shell{ctx: ctx, cmd: cmd}
	var child [3]*os.File // the child's ends, closed here once it started
	defer func() {
		for _, f := range child {
			if f != nil {
				f.Close()
			}
		}
	}()
	stdin, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	child[0], s.Stdin = stdin, w
	for i := range s.outs {
		r, w, err := os.Pipe()
		if err != nil {
			s.closeAll()
			return nil, err
		}
		child[i+1], s.outs[i] = w, &pipeReader{f: r, eof: make(chan struct{})}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child[0], child[1], child[2]
	s.Stdout, s.Stderr = s.outs[0], s.outs[1]
	s.release, err = startOwned(cmd)
	if err != nil {
		s.closeAll()
		return nil, fmt.Errorf("start shell %s: %w", args[0], err)
	}
	return s, nil
}

func (s *Shell) closeAll() {
	if s.Stdin != nil {
		s.Stdin.Close()
	}
	for _, p := range s.outs {
		if p != nil {
			p.f.Close()
		}
	}
}

// Kill sends SIGKILL to the shell's process group. It does not wait; call
// Wait for that.
func (s *Shell) Kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}

// Wait waits for the shell to exit and for Stdout and Stderr to reach EOF,
// and returns its exit code. It may run while Stdout and Stderr are being
// read. A stream that a background process still holds open after the exit
// stops counting once it has had no data for 2 s with nothing left unread
// (or at once when ctx is done); Wait then closes all three streams, so a
// later Read returns an error. err is non-nil, with code -1, when the
// shell did not run to an exit status (killed by ctx, say); a non-zero
// exit is not an error. Calling Wait again returns the same.
func (s *Shell) Wait() (code int, err error) {
	s.once.Do(func() {
		werr := s.cmd.Wait()
		s.release()
		for _, p := range s.outs {
			p.drain(s.ctx)
		}
		s.closeAll()
		s.code, s.err = exitCode(s.ctx, werr) // killed by Kill: -1 and "signal: killed"
	})
	return s.code, s.err
}

// pipeReader is the parent's end of an output pipe; it notes when its
// reader reaches EOF and when it last read.
type pipeReader struct {
	f    *os.File
	eof  chan struct{}
	once sync.Once

	mu   sync.Mutex
	last time.Time // of the last Read that returned data
}

func (p *pipeReader) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	if n > 0 {
		p.mu.Lock()
		p.last = time.Now()
		p.mu.Unlock()
	}
	if err != nil {
		p.once.Do(func() { close(p.eof) })
		if errors.Is(err, os.ErrClosed) {
			err = io.EOF
		}
	}
	return n, err
}

// drain waits, after the shell exited, for the reader to reach EOF; it
// stops waiting when ctx is done, or when nothing was read for waitDelay
// and nothing is left unread (a background process holds the pipe).
func (p *pipeReader) drain(ctx context.Context) {
	t := time.NewTimer(waitDelay)
	defer t.Stop()
	for {
		select {
		case <-p.eof:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		idle := time.Since(p.last)
		p.mu.Unlock()
		if idle >= waitDelay && p.unread() == 0 {
			return
		}
		t.Reset(max(waitDelay-idle, 100*time.Millisecond))
	}
}

// unread returns the number of bytes in the pipe not read yet (0 if it
// cannot tell).
func (p *pipeReader) unread() int {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n = pendingBytes(int(fd))
	})
	return n
}
