package command

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shellSession is a started /bin/sh read line by line.
type shellSession struct {
	tb    testing.TB
	sh    *Shell
	lines chan string // Stdout lines; closed at EOF
	errs  chan string // Stderr lines; closed at EOF
}

// startShell starts exec e as a shell; the test fails if it is still
// running at cleanup (it is killed then).
func startShell(tb testing.TB, ctx context.Context, e Exec, env map[string]string) *shellSession {
	tb.Helper()
	sh, err := StartShell(ctx, e, env, nil)
	if err != nil {
		tb.Fatalf("StartShell: %v", err)
	}
	s := &shellSession{tb: tb, sh: sh, lines: make(chan string, 100), errs: make(chan string, 100)}
	pump := func(r io.Reader, ch chan string) {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}
	go pump(sh.Stdout, s.lines)
	go pump(sh.Stderr, s.errs)
	tb.Cleanup(func() {
		sh.Kill()
		sh.Wait()
		for range s.lines {
		}
		for range s.errs {
		}
	})
	return s
}

func (s *shellSession) send(line string) {
	s.tb.Helper()
	if _, err := io.WriteString(s.sh.Stdin, line+"\n"); err != nil {
		s.tb.Fatalf("write %q to the shell: %v", line, err)
	}
}

// next returns the next line of ch, failing after 20 s or at EOF.
func (s *shellSession) next(ch chan string, what string) string {
	s.tb.Helper()
	select {
	case l, ok := <-ch:
		if !ok {
			s.tb.Fatalf("%s ended; want a line", what)
		}
		return l
	case <-time.After(20 * time.Second):
		s.tb.Fatalf("no line on %s in 20 s", what)
	}
	return ""
}

// wait calls Wait, failing if it takes more than 20 s.
func (s *shellSession) wait() (int, error) {
	s.tb.Helper()
	type res struct {
		code int
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		code, err := s.sh.Wait()
		ch <- res{code, err}
	}()
	select {
	case r := <-ch:
		return r.code, r.err
	case <-time.After(20 * time.Second):
		s.tb.Fatal("Wait did not return in 20 s")
	}
	return 0, nil
}

// A shell reads commands on Stdin and answers on Stdout and Stderr; it gets
// the script environment (exec env, the caller's env, the default PATH)
// and working directory; Wait returns its exit code once the streams ended.
func TestShellRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := startShell(t, context.Background(), Exec{Command: "/bin/sh", WorkDir: dir, Env: map[string]string{"A": "from exec"}},
		map[string]string{"B": "from caller"})
	s.send("echo hi")
	if got := s.next(s.lines, "stdout"); got != "hi" {
		t.Fatalf("echo hi printed %q, want hi", got)
	}
	s.send("echo oops >&2")
	if got := s.next(s.errs, "stderr"); got != "oops" {
		t.Fatalf("stderr = %q, want oops", got)
	}
	s.send(`echo "$A|$B|$PATH|$(pwd)"`)
	if got, want := s.next(s.lines, "stdout"), "from exec|from caller|"+defaultPath+"|"+dir; got != want {
		t.Fatalf("environment and directory = %q, want %q", got, want)
	}
	s.send("exit 3")
	if _, ok := <-s.lines; ok {
		t.Fatal("stdout went on after exit")
	}
	if code, err := s.wait(); code != 3 || err != nil {
		t.Fatalf("Wait = %d, %v; want 3, nil", code, err)
	}
	if code, err := s.sh.Wait(); code != 3 || err != nil {
		t.Fatalf("second Wait = %d, %v; want the same", code, err)
	}
}

// Closing Stdin ends the shell like an interactive ^D.
func TestShellStdinEOF(t *testing.T) {
	s := startShell(t, context.Background(), Exec{Command: "/bin/sh"}, nil)
	s.send("echo one")
	if got := s.next(s.lines, "stdout"); got != "one" {
		t.Fatalf("stdout = %q, want one", got)
	}
	if err := s.sh.Stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if code, err := s.wait(); code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v; want 0, nil", code, err)
	}
}

// Kill, and the end of the context, kill the shell's whole process group:
// a background child the shell started is killed too, and Wait reports
// that the shell did not exit by itself.
func TestShellKillsGroup(t *testing.T) {
	for _, how := range []string{"Kill", "context"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startShell(t, ctx, Exec{Command: "/bin/sh"}, nil)
			s.send("sleep 300 & echo $!")
			pid, err := strconv.Atoi(s.next(s.lines, "stdout"))
			if err != nil {
				t.Fatalf("background pid: %v", err)
			}
			if how == "Kill" {
				s.sh.Kill()
			} else {
				cancel()
			}
			code, err := s.wait()
			if code != -1 || err == nil {
				t.Fatalf("Wait = %d, %v; want -1 and an error", code, err)
			}
			if how == "context" && !errors.Is(err, context.Canceled) {
				t.Fatalf("Wait error %v does not wrap context.Canceled", err)
			}
			waitGone(t, pid)
		})
	}
}

// A background process that keeps the shell's stdout open does not hold
// Wait once the shell exited: after 2 s without output Wait returns and
// closes the streams.
func TestShellWaitBackgroundHoldsPipe(t *testing.T) {
	s := startShell(t, context.Background(), Exec{Command: "/bin/sh"}, nil)
	s.send("sleep 300 & echo $!")
	pid, err := strconv.Atoi(s.next(s.lines, "stdout"))
	if err != nil {
		t.Fatalf("background pid: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); waitGone(t, pid) })
	s.send("echo bye; exit 0")
	if got := s.next(s.lines, "stdout"); got != "bye" {
		t.Fatalf("stdout = %q, want bye", got)
	}
	start := time.Now()
	if code, err := s.wait(); code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v; want 0, nil", code, err)
	}
	if d := time.Since(start); d < waitDelay {
		t.Fatalf("Wait returned after %v, before the %v grace for the streams", d, waitDelay)
	}
	if _, ok := <-s.lines; ok {
		t.Fatal("stdout has a line after Wait; want it closed")
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the background process is gone (%v); Wait must not kill it", err)
	}
}

// Output the reader has not taken yet is not lost: after the exit, Wait
// keeps waiting while bytes are left in the pipe, however slow the reader.
func TestShellWaitSlowReader(t *testing.T) {
	sh, err := StartShell(context.Background(), Exec{Command: "/bin/sh"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const lines = 200 // 10,000 bytes: within the pipe buffer, so the shell exits at once
	fmt.Fprintf(sh.Stdin, "i=0; while [ $i -lt %d ]; do echo %049d; i=$((i+1)); done; exit 0\n", lines, 0)
	waited := make(chan error, 1)
	go func() {
		_, err := sh.Wait()
		waited <- err
	}()
	go io.Copy(io.Discard, sh.Stderr)
	// The reader is slow: it starts reading only after the 2 s grace.
	slow := time.NewTimer(waitDelay + time.Second)
	select {
	case err := <-waited:
		t.Fatalf("Wait returned (%v) before the output was read", err)
	case <-slow.C:
	}
	b, err := io.ReadAll(sh.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(b), lines*50; got != want {
		t.Fatalf("read %d bytes, want %d", got, want)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return in 20 s after the output was read")
	}
}

// A shell with no command, or a container exec, is refused before anything
// starts; bad exec settings are reported as for scripts.
func TestShellRefused(t *testing.T) {
	for _, tc := range []struct {
		e    Exec
		want string
	}{
		{Exec{}, "shell command is empty"},
		{Exec{Command: "  "}, "shell command is empty"},
		{Exec{Command: "/bin/sh", ContainerImage: "alpine"}, "containerImage is not supported"},
		{Exec{Command: `/bin/sh "unterminated`}, "split shell command"},
		{Exec{Command: "/bin/sh", WorkDir: "/nonexistent/dir"}, "exec.workDir"},
		{Exec{Command: "/nonexistent/shell"}, "start shell /nonexistent/shell"},
	} {
		sh, err := StartShell(context.Background(), tc.e, nil, nil)
		if sh != nil {
			sh.Kill()
			sh.Wait()
		}
		checkErr(t, err, tc.want)
	}
}

// waitGone waits up to 20 s for pid to have exited (gone, or a zombie
// nobody reaped yet).
func waitGone(tb testing.TB, pid int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			// state is the field after the ")" that ends the command name
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("process %d still running 20 s after its group was killed (%s)", pid, fmt.Sprint(err))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
