package etcharun_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// waitLong bounds every wait: CI is a slow, shared 2-core machine, and a
// passing test never waits it out.
const waitLong = 60 * time.Second

func TestMain(m *testing.M) {
	code := leaktest.Main(m)
	etcdproc.RemoveBuilds()
	os.Exit(code)
}

// lines collects a process's output and wakes waiters on every write.
type lines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait waits until n lines match re and returns the submatches of the
// n-th.
func (l *lines) wait(t *testing.T, n int, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(waitLong)
	for {
		l.mu.Lock()
		ms := rx.FindAllStringSubmatch(l.buf.String(), -1)
		changed := l.changed
		l.mu.Unlock()
		if len(ms) >= n {
			return ms[n-1]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("after %s: %d line(s) match %q, want %d; output:\n%s", waitLong, len(ms), re, n, l.String())
		}
	}
}

// setup builds etcha, makes a key pair and writes a config whose sources
// are src (Jsonnet), with state in dir/state and the listener on a free
// loopback port. It returns the binary, the config path and dir.
func setup(t *testing.T, src string) (bin, cfg, dir string) {
	t.Helper()
	bin = etcdproc.BuildPackage(t, "./cmd/etcha")
	dir = t.TempDir()
	out, err := exec.Command(bin, "generate-keys").Output()
	if err != nil {
		t.Fatalf("generate-keys: %v", err)
	}
	var keys struct{ PrivateKey, PublicKey string }
	if err := json.Unmarshal(out, &keys); err != nil {
		t.Fatalf("generate-keys printed %q: %v", out, err)
	}
	cfg = filepath.Join(dir, "etcha.jsonnet")
	text := `{
  build: {signingKey: '` + keys.PrivateKey + `'},
  run: {verifyKeys: ['` + keys.PublicKey + `'], stateDir: '` + filepath.Join(dir, "state") + `'},
  exec: {command: '/bin/sh -c'},
  httpServer: {listenAddress: '127.0.0.1:0'},
  httpClient: {tlsSkipVerify: true},
  sources: ` + src + `,
}`
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, cfg, dir
}

// build writes a pattern that appends word to dir/log and builds its JWT.
func build(t *testing.T, bin, cfg, dir, word string) string {
	t.Helper()
	p := filepath.Join(dir, word+".jsonnet")
	text := `{run: [{id: '` + word + `', always: true, change: 'echo ` + word + ` >> ` + filepath.Join(dir, "log") + `'}]}`
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, word+".jwt")
	if out, err := exec.Command(bin, "-c", cfg, "build", p, dest).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", word, err, out)
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// etcha is an `etcha run` process.
type etcha struct {
	cmd  *exec.Cmd
	log  *lines
	done chan struct{}
	err  error // read after done
}

func start(t *testing.T, bin, cfg string, env []string, args ...string) *etcha {
	t.Helper()
	e := &etcha{log: newLines(), done: make(chan struct{})}
	e.cmd = exec.Command(bin, append([]string{"-c", cfg}, args...)...)
	e.cmd.Env = append(os.Environ(), env...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.WaitDelay = 5 * time.Second
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // owned by e: the cleanup waits for done
		e.err = e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		<-e.done
		if t.Failed() {
			t.Logf("etcha output:\n%s", e.log.String())
		}
	})
	return e
}

// exit waits for the process to exit and returns its exit code.
func (e *etcha) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(waitLong):
		t.Fatalf("etcha did not exit within %s", waitLong)
	}
	var ee *exec.ExitError
	switch {
	case e.err == nil:
		return 0
	case errors.As(e.err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(e.err)
	return -1
}

// TestRunEtcdKilled: `etcha run` watching an etcd:/// key runs a put
// JWT; etcd is killed with -9 and started again; a later put still runs,
// and a push to the same process works; SIGTERM exits 0.
func TestRunEtcdKilled(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	m := c.Member(0)
	bin, cfg, dir := setup(t, `{app: {allowPush: true, pullPaths: ['etcd:///patterns/app']}}`)
	one, two := build(t, bin, cfg, dir, "one"), build(t, bin, cfg, dir, "two")
	e := start(t, bin, cfg, []string{"ETCD_ENDPOINTS=" + m.Endpoint()}, "run")
	addr := e.log.wait(t, 1, `msg=listening .*addr=(127\.0\.0\.1:\d+)`)[1]

	put := func(v string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if _, err := m.Client(t).Put(ctx, "/patterns/app", v); err != nil {
			t.Fatal(err)
		}
	}
	put(one)
	e.log.wait(t, 1, `msg=pull .*status=ran`)
	m.Kill()
	m.Start()
	put(two)
	e.log.wait(t, 2, `msg=pull .*status=ran`)
	if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != "one\ntwo\n" {
		t.Fatalf("log %q, want one then two", b)
	}

	out, err := exec.Command(bin, "-c", cfg, "push", "-h", addr, "app", "echo", "pushed").CombinedOutput()
	if err != nil || string(out) != addr+":\n    pushed\n" {
		t.Fatalf("etcha push -h %s: %v, output %q", addr, err, out)
	}
	out, err = exec.Command(bin, "-c", cfg, "push", "-h", addr, "nope", "true").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "    ERROR: push didn't match any sources\n") {
		t.Fatalf("push to an unknown source: %v, output %q; want exit 1 and the 404 message", err, out)
	}

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.exit(t); code != 0 {
		t.Fatalf("etcha run after SIGTERM: exit %d, want 0", code)
	}
}

// TestRunOnceExit: `etcha run -o` exits 0 when every source ran, 1 when
// one failed.
func TestRunOnceExit(t *testing.T) {
	bin, cfg, dir := setup(t, `{
    ok: {commands: [{id: 'ok', always: true, change: 'true'}]},
    fails: {commands: [{id: 'fails', always: true, change: 'exit 3'}]},
  }`)
	if code := start(t, bin, cfg, nil, "run", "-o").exit(t); code != 1 {
		t.Fatalf("run -o with a failing source: exit %d, want 1", code)
	}
	okOnly := filepath.Join(dir, "ok.jsonnet")
	text := fmt.Sprintf(`(import %q) + {sources: {ok: {commands: [{id: 'ok', always: true, change: 'true'}]}}}`, cfg)
	if err := os.WriteFile(okOnly, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := start(t, bin, okOnly, nil, "run", "-o").exit(t); code != 0 {
		t.Fatalf("run -o with a succeeding source: exit %d, want 0", code)
	}
}

// TestRunSecondSignal: SIGTERM lets a start-up run in progress go on
// (the grace period is 10 s); a second SIGTERM kills it at once: etcha
// exits 0 well before the grace period is over and the command's process
// is gone.
func TestRunSecondSignal(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pid.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	bin, cfg, _ := setup(t, `{slow: {commands: [{id: 'slow', always: true, change: 'echo $$ > `+fifo+`; exec sleep 60'}]}}`)
	e := start(t, bin, cfg, nil, "run")
	b, err := os.ReadFile(fifo) // returns once the command has written its pid
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	first := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e.log.wait(t, 1, `msg=stopped`) // the listener is down: the first signal was taken
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the run in progress was stopped by the first signal: kill 0 = %v", err)
	}
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.exit(t); code != 0 {
		t.Fatalf("exit %d after two SIGTERMs, want 0", code)
	}
	if took := time.Since(first); took > 8*time.Second {
		t.Fatalf("etcha took %s to exit after two SIGTERMs; the second must skip the 10 s grace period", took)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the command's process %d survived: kill 0 = %v", pid, err)
	}
}
