package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// run runs name with args in dir; see runCmd.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	return runCmd(t, cmd)
}

// runCmd runs cmd with a generous deadline and returns its stdout; a
// failure shows both streams.
func runCmd(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
		}
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after 5 minutes\nstderr:\n%s", strings.Join(cmd.Args, " "), stderr.String())
	}
	return stdout.String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// lineStream is a started command's stdout, line by line.
type lineStream struct {
	cmd    *exec.Cmd
	lines  chan string
	done   chan error
	stderr *syncBuffer
}

func startLines(t *testing.T, cmd *exec.Cmd) *lineStream {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &lineStream{cmd: cmd, lines: make(chan string, 64), done: make(chan error, 1), stderr: &syncBuffer{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("container stderr:\n%s", s.stderr)
		}
	})
	return s
}

// next returns the next line starting with prefix, within two minutes.
func (s *lineStream) next(t *testing.T, prefix string) string {
	t.Helper()
	return s.match(t, fmt.Sprintf("a line starting with %q", prefix), func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// containing returns the next line that contains substr, within two
// minutes.
func (s *lineStream) containing(t *testing.T, substr string) string {
	t.Helper()
	return s.match(t, fmt.Sprintf("a line containing %q", substr), func(l string) bool { return strings.Contains(l, substr) })
}

// match returns the next line for which ok is true, within two minutes;
// what describes it in the failure.
func (s *lineStream) match(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case l, open := <-s.lines:
			if !open {
				t.Fatalf("the output ended before %s", what)
			}
			if ok(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no %s within 2 minutes", what)
		}
	}
}

// wait returns how the container ended, within two minutes.
func (s *lineStream) wait(t *testing.T) error {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case _, ok := <-s.lines: // drain: Wait runs after stdout closes
			if ok {
				continue
			}
			select {
			case err := <-s.done:
				return err
			case <-deadline:
			}
		case <-deadline:
		}
		t.Fatal("the container did not exit within 2 minutes")
		return nil
	}
}

// syncBuffer is a strings.Builder safe for the writer goroutine of exec
// and the test goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
