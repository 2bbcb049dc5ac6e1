package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinary builds etcha once and checks what only the real binary shows:
// exit codes through main, and that SIGTERM stops a running `local`,
// killing its command.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	dir, cfg := setup(t)
	bin := filepath.Join(t.TempDir(), "etcha")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"version"}, 0},
		{nil, 2},
		{[]string{"-c", cfg, "local", "-c", `{id: 'x', check: 'false', change: 'true'}`}, 1},
		{[]string{"-c", cfg, "local", `{id: 'x', check: 'true', change: 'true'}`}, 0},
	} {
		err := exec.Command(bin, tc.args...).Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Fatalf("etcha %s: exit %d, want %d", strings.Join(tc.args, " "), code, tc.code)
		}
	}
	t.Run("SIGTERM", func(t *testing.T) { testSIGTERM(t, bin, dir, cfg) })
}

func testSIGTERM(t *testing.T, bin, dir, cfg string) {
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The command reports its pid through the fifo, then becomes sleep.
	cmd := exec.Command(bin, "-c", cfg, "local", fmt.Sprintf(`{id: 'slow', always: true, change: 'echo $$ > %s; exec sleep 60'}`, fifo))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	pidc := make(chan string, 1)
	go func() {
		b, _ := os.ReadFile(fifo) // returns once the writer closes
		pidc <- string(b)
	}()
	var pid int
	select {
	case s := <-pidc:
		if pid, _ = strconv.Atoi(strings.TrimSpace(s)); pid <= 0 {
			t.Fatalf("command wrote %q to the fifo, want its pid", s)
		}
	case err := <-done:
		t.Fatalf("etcha exited before the command started: %v; stderr %s", err, stderr.String())
	case <-time.After(30 * time.Second):
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close() // release the reader
		}
		<-pidc
		t.Fatalf("the command did not start within 30 s; stderr %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("etcha after SIGTERM: %v, want exit status 1; stderr %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("etcha did not exit within 30 s of SIGTERM")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the command's process %d survived etcha (kill 0: %v)", pid, err)
	}
	if last := strings.TrimSpace(stderr.String()); !strings.Contains(last, "etcha: ") {
		t.Fatalf("stderr %q, want an etcha: error line", last)
	}
}
