package supervisor

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// helperEnv selects a helper mode when the test binary is re-executed as a
// child process.
const helperEnv = "SUPERVISOR_HELPER"

// helperLifetime bounds how long a helper process can outlive a broken
// test.
const helperLifetime = 60 * time.Second

// waitTimeout bounds every wait in the tests; generous for a slow CI box.
const waitTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(leaktest.Main(m))
}

// runHelper is the child side of the tests. Modes:
//
//	exit CODE       exit at once with CODE
//	signals         print "ready", then "got SIGxxx" per forwarded signal; exit 0 on SIGTERM
//	ignore-term     start a grandchild that ignores SIGTERM in the same process
//	                group, print "grandchild PID", ignore SIGTERM, print "ready", block
//	orphan          start a grandchild that exits at once, wait until it is a
//	                zombie (without reaping it), print "orphan PID", exit 0
//	orphan-running  run an "orphan" helper and wait for it, so its zombie
//	                grandchild is orphaned while this process runs on; then
//	                behave as "signals"
//	leave-group M   start a grandchild in helper mode M in the same process
//	                group, print "grandchild PID", exit 0
//	supervise       Start a "signals" child with this package, print "child
//	                PID", block (with the test's stdin as Options.Terminal
//	                when it is a terminal)
//	foreground      print "foreground true" if this process's group is the
//	                foreground group of the terminal on stdin, else "foreground
//	                false"; exit 0
func runHelper(mode string, args []string) int {
	switch mode {
	case "leave-group":
		p, err := spawnHelper(args[0], nil, false, "leaf")
		if err != nil {
			return 109
		}
		fmt.Printf("grandchild %d\n", p.Pid)
		return 0
	case "supervise":
		return helperSupervise(args)
	case "foreground":
		return helperForeground()
	case "exit":
		code, err := strconv.Atoi(args[0])
		if err != nil {
			return 100
		}
		return code
	case "signals":
		return helperSignals()
	case "ignore-term":
		return helperIgnoreTerm(args)
	case "orphan":
		return helperOrphan()
	case "orphan-running":
		if _, err := spawnHelper("orphan", os.Stdout, true); err != nil {
			return 101
		}
		return helperSignals()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 102
}

func helperSignals() int {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, ForwardedSignals()...)
	fmt.Println("ready")
	deadline := time.After(helperLifetime)
	for {
		select {
		case s := <-ch:
			sig := s.(syscall.Signal)
			fmt.Println("got " + sigString(sig))
			if sig == syscall.SIGTERM {
				return 0
			}
		case <-deadline:
			return 103
		}
	}
}

// helperSupervise starts a child with this package, as dispenser would.
func helperSupervise(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		return 110
	}
	opts := Options{Argv: []string{exe}, Env: helperEnviron(args[0]), Stdout: os.Stdout, Stdin: os.Stdin}
	if len(args) > 1 && args[1] == "terminal" {
		opts.Terminal = os.Stdin
	}
	c, err := Start(opts)
	if err != nil {
		fmt.Println(err)
		return 111
	}
	fmt.Printf("child %d\n", c.Pid())
	if err := c.Wait(); err != nil {
		return 112
	}
	return 0
}

func helperIgnoreTerm(args []string) int {
	signal.Ignore(syscall.SIGTERM)
	if len(args) == 0 || args[0] != "leaf" {
		p, err := spawnHelper("ignore-term", nil, false, "leaf")
		if err != nil {
			return 104
		}
		fmt.Printf("grandchild %d\n", p.Pid)
		fmt.Println("ready")
	}
	<-time.After(helperLifetime) // normally killed long before
	return 105
}

// spawnHelper starts the test binary in helper mode with os.StartProcess
// (not os/exec, which would trip GODEBUG=execwait=2 in the helper). If
// wait is set it waits for the process to exit.
func spawnHelper(mode string, stdout *os.File, wait bool, args ...string) (*os.Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	if stdout == nil {
		stdout = null
	}
	p, err := os.StartProcess(exe, append([]string{exe}, args...), &os.ProcAttr{
		Env:   helperEnviron(mode),
		Files: []*os.File{null, stdout, null},
	})
	if err != nil || !wait {
		return p, err
	}
	_, err = p.Wait()
	return p, err
}

// helperEnviron returns this process's environment with helperEnv set to
// mode. It replaces rather than appends, since with duplicates getenv in
// the new process would see the first one (os.StartProcess does not
// deduplicate). It also stops the race detector from sleeping a second
// when a helper exits (its atexit_sleep_ms default).
func helperEnviron(mode string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, helperEnv+"=") || strings.HasPrefix(kv, "GORACE=")
	})
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(env, helperEnv+"="+mode, "GORACE="+gorace)
}

// lineBuffer is an io.Writer that splits what it gets into lines, which
// the test reads one by one with a deadline.
type lineBuffer struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	read    int
	notify  chan struct{} // gets a token when lines grows
}

func newLineBuffer() *lineBuffer {
	return &lineBuffer{notify: make(chan struct{}, 1)}
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
	}
	select {
	case b.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// next returns the next unread line, failing the test after waitTimeout.
func (b *lineBuffer) next(t testing.TB) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		if b.read < len(b.lines) {
			line := b.lines[b.read]
			b.read++
			b.mu.Unlock()
			return line
		}
		b.mu.Unlock()
		select {
		case <-b.notify:
		case <-deadline.C:
			t.Fatalf("no output line from child within %v", waitTimeout)
		}
	}
}

// expect fails the test unless the next line is want.
func (b *lineBuffer) expect(t testing.TB, want string) {
	t.Helper()
	if got := b.next(t); got != want {
		t.Fatalf("child printed %q, want %q", got, want)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testChild is a helper child started by startHelper.
type testChild struct {
	*Child
	out  *lineBuffer
	logs *syncBuffer
}

// startHelper starts the test binary as a child in the given helper mode.
// opts.Argv, Env, Stdout, Stderr and Logger are filled in. The child is
// killed when the test ends.
func startHelper(t testing.TB, opts Options, mode string, args ...string) *testChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tc := &testChild{out: newLineBuffer(), logs: &syncBuffer{}}
	stderr := &syncBuffer{}
	opts.Argv = append([]string{exe}, args...)
	opts.Env = helperEnviron(mode)
	opts.Stdout, opts.Stderr = tc.out, stderr
	opts.Logger = slog.New(slog.NewTextHandler(tc.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("Start(%s) = %v", mode, err)
	}
	tc.Child = c
	t.Cleanup(func() {
		// Kill the whole group, not just the child, so that a failing
		// test leaves no grandchildren behind.
		_ = syscall.Kill(-c.Pid(), syscall.SIGKILL)
		_ = c.Stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("child stderr:\n%s\nsupervisor log:\n%s", stderr, tc.logs)
		}
	})
	return tc
}

// eventually polls cond every 10ms until it is true, failing the test
// after waitTimeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
	}
}

// procStat returns the state and parent pid of pid from /proc; ok is
// false if the process does not exist.
func procStat(pid int) (state byte, ppid int, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], ppid, true
}

// zombieChildren returns the pids of this process's zombie children.
func zombieChildren(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var zombies []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, ok := procStat(pid); ok && state == 'Z' && ppid == os.Getpid() {
			zombies = append(zombies, pid)
		}
	}
	return zombies
}
