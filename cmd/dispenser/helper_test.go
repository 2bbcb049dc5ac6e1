package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// waitLong bounds every wait in these tests. It is generous on purpose:
// CI is a slow, shared 2-core machine, and a passing test never waits it out.
const waitLong = 60 * time.Second

const childSentinel = "dispenser-test-child"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childSentinel {
		os.Exit(childMain(os.Args[2:]))
	}
	os.Exit(leaktest.Main(m))
}

// childMain is the child process of the tests: the test binary re-executed.
// It prints "ready <files>" with the distinct contents of the files in dir,
// then one line per signal: "<SIG> <files>". Its args: dir, then a mode:
// "serve" (exit 0 on TERM/INT), "ignore-term" (exit only when killed),
// "exit=N" (exit with N right after ready), "kill-self" and "term-self"
// (die by SIGKILL or SIGTERM), "group-ignore-term" (first start a
// grandchild in "ignore-term" mode, print "grandchild PID", then behave as
// "ignore-term").
func childMain(args []string) int {
	dir, mode := args[0], args[1]
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
		syscall.SIGQUIT, syscall.SIGALRM, syscall.SIGCONT, syscall.SIGTERM, syscall.SIGINT,
		syscall.SIGPWR, sigRTMin3)
	if mode == "group-ignore-term" {
		mode = "ignore-term"
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return 120
		}
		p, err := os.StartProcess(os.Args[0], []string{os.Args[0], childSentinel, dir, mode},
			&os.ProcAttr{Files: []*os.File{null, null, null}})
		null.Close()
		if err != nil {
			return 120
		}
		fmt.Printf("grandchild %d\n", p.Pid)
	}
	fmt.Printf("ready %s\n", contents(dir))
	switch {
	case strings.HasPrefix(mode, "exit="):
		n, _ := strconv.Atoi(strings.TrimPrefix(mode, "exit="))
		return n
	case mode == "kill-self":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case mode == "term-self":
		signal.Reset(syscall.SIGTERM)
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
	for s := range sigs {
		name := strings.ToUpper(signalName(s.(syscall.Signal)))
		fmt.Printf("%s %s\n", name, contents(dir))
		if (s == syscall.SIGTERM || s == syscall.SIGINT) && mode != "ignore-term" {
			return 0
		}
	}
	return 0
}

// sigRTMin3 is SIGRTMIN+3, systemd's halt signal.
const sigRTMin3 = syscall.Signal(37)

func signalName(s syscall.Signal) string {
	for _, n := range []string{"HUP", "USR1", "USR2", "WINCH", "QUIT", "ALRM", "CONT", "TERM", "INT", "PWR", "RTMIN+3"} {
		if sig, _ := parseSig(n); sig == s {
			return n
		}
	}
	return s.String()
}

func parseSig(n string) (syscall.Signal, bool) {
	m := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
		"WINCH": syscall.SIGWINCH, "QUIT": syscall.SIGQUIT, "ALRM": syscall.SIGALRM, "CONT": syscall.SIGCONT,
		"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "PWR": syscall.SIGPWR, "RTMIN+3": sigRTMin3}
	s, ok := m[n]
	return s, ok
}

// contents lists "path=value" for every file under dir, following
// symlinks as any reader would and skipping dispenser's "..*" entries,
// sorted and joined by ",".
func contents(dir string) string {
	var out []string
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "..") {
				continue
			}
			p := filepath.Join(rel, e.Name())
			fi, err := os.Stat(filepath.Join(dir, p))
			switch {
			case err != nil:
			case fi.IsDir():
				walk(p)
			default:
				b, _ := os.ReadFile(filepath.Join(dir, p))
				out = append(out, p+"="+string(b))
			}
		}
	}
	walk("")
	slices.Sort(out)
	return strings.Join(out, ",")
}

// lines is an io.Writer that hands each complete line to a channel, so a
// test can wait for the child's output with a deadline.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan string
	all []string
}

func newLines() *lines { return &lines{ch: make(chan string, 1024)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		line = strings.TrimSuffix(line, "\n")
		l.all = append(l.all, line)
		select {
		case l.ch <- line:
		default:
		}
	}
}

// String is everything written so far.
func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n") + "\n" + l.buf.String()
}

// next returns the next line that starts with prefix, failing the test
// after waitLong. Lines before it are returned as skipped.
func (l *lines) next(t testing.TB, prefix string) (line string, skipped []string) {
	t.Helper()
	return l.match(t, prefix, func(line string) bool { return strings.HasPrefix(line, prefix) })
}

// containing returns the next line that contains substr.
func (l *lines) containing(t testing.TB, substr string) string {
	t.Helper()
	line, _ := l.match(t, substr, func(line string) bool { return strings.Contains(line, substr) })
	return line
}

func (l *lines) match(t testing.TB, what string, ok func(string) bool) (line string, skipped []string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case line := <-l.ch:
			if ok(line) {
				return line, skipped
			}
			skipped = append(skipped, line)
		case <-deadline:
			t.Fatalf("no line with %q after %v; skipped %q", what, waitLong, skipped)
		}
	}
}

// dispenser runs run() in the background against server s and returns
// its child's output and a function that stops it and returns run's error.
type running struct {
	out  *lines
	errs *lines
	done chan error
	stop context.CancelFunc
}

func start(t *testing.T, s *etcdtest.Server, args ...string) *running {
	t.Helper()
	t.Setenv("ETCD_ENDPOINTS", s.Endpoint())
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: newLines(), errs: newLines(), done: make(chan error, 1), stop: cancel}
	go func() { r.done <- run(ctx, args, r.out, r.errs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitLong):
			t.Errorf("run did not return within %v of cancel", waitLong)
		}
	})
	return r
}

// wait returns run's error, failing the test if it does not return.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for the cleanup
		return err
	case <-time.After(waitLong):
		t.Fatalf("run did not return within %v; log:\n%s", waitLong, r.errs.String())
		return nil
	}
}

func childArgs(dir, mode string) []string {
	return []string{"--", os.Args[0], childSentinel, dir, mode}
}

var _ io.Writer = (*lines)(nil)

func put(t testing.TB, s *etcdtest.Server, kv ...string) {
	t.Helper()
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for i := 0; i < len(kv); i += 2 {
		if _, err := c.Put(ctx, kv[i], kv[i+1]); err != nil {
			t.Fatalf("put %s: %v", kv[i], err)
		}
	}
}
