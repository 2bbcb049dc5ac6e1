package fault_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// dispenser is the dispenser binary running as a process of the test.
type dispenser struct {
	cmd     *exec.Cmd
	out     *lines   // its stdout, which is the child's: "ready …", "HUP …"
	log     *lines   // its stderr: dispenser's log
	stdin   *os.File // the child reads it and exits 0 at EOF
	done    chan struct{}
	err     error // cmd.Wait's result; read only after done
	started time.Time
}

// startDispenser runs the dispenser binary with args and ETCD_ENDPOINTS
// set to endpoints (and no other ETCD_* variable). With wrap, the command
// line is wrap followed by the binary and args (e.g. unshare). At cleanup
// dispenser is stopped (see cleanup), and a failed test shows its log.
func startDispenser(t *testing.T, endpoints []string, wrap []string, args ...string) *dispenser {
	t.Helper()
	bin := etcdproc.BuildPackage(t, "./cmd/dispenser")
	argv := append(slices.Clone(wrap), bin)
	argv = append(argv, args...)
	d := &dispenser{out: newLines(), log: newLines(), done: make(chan struct{})}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(withoutEtcd(os.Environ()), "ETCD_ENDPOINTS="+strings.Join(endpoints, ","))
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.log
	d.cmd.WaitDelay = 5 * time.Second // an orphan holding the pipes must not block Wait
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdin, d.stdin = r, w
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("start dispenser: %v", err)
	}
	r.Close()
	go func() { // owned by d: cleanup waits for done
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

// cleanup ends the child by closing its stdin, then, if dispenser is still
// there (e.g. it never started the child), stops it with SIGTERM, and
// kills it only if that fails, which is an error.
func (d *dispenser) cleanup(t *testing.T) {
	d.stdin.Close()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(waitLong):
			t.Errorf("dispenser still running %v after SIGTERM; killing it", waitLong)
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	if t.Failed() {
		t.Logf("dispenser log:\n%s", d.log.String())
		t.Logf("dispenser stdout:\n%s", d.out.String())
	}
}

// Pid is dispenser's process id (of the wrapper, if there is one).
func (d *dispenser) Pid() int { return d.cmd.Process.Pid }

// exit waits for dispenser to exit and returns its status: the exit code,
// or 128+n if it was killed by signal n.
func (d *dispenser) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(waitLong):
		t.Fatalf("dispenser did not exit within %v; log:\n%s", waitLong, d.log.String())
	}
	if d.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(d.err, &ee) {
		t.Fatalf("wait for dispenser: %v", d.err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// childArgv is the part of dispenser's command line that runs the test
// binary as the child in the given mode, watching dir.
func childArgv(dir, mode string) []string {
	return []string{"--", os.Args[0], childSentinel, dir, mode}
}

func withoutEtcd(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "ETCD_") })
}

// put puts key/value pairs, retrying each until etcd takes it: during a
// leader change etcd may time out a request that a retry then commits.
func put(t *testing.T, cli *clientv3.Client, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		retry(t, "put "+kv[i], func(ctx context.Context) error {
			_, err := cli.Put(ctx, kv[i], kv[i+1])
			return err
		})
	}
}

func del(t *testing.T, cli *clientv3.Client, keys ...string) {
	t.Helper()
	for _, k := range keys {
		retry(t, "delete "+k, func(ctx context.Context) error {
			_, err := cli.Delete(ctx, k)
			return err
		})
	}
}

// retry calls f with a short deadline until it succeeds, failing the test
// after waitLong.
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, waitLong, err)
		}
		pause(100 * time.Millisecond)
	}
}

// pause paces a polling loop; it is never used to wait for an event.
func pause(d time.Duration) { <-time.After(d) }

// waitState polls the target until state(dir) is want and returns when
// that was first seen. It fails the test after waitLong.
func waitState(t *testing.T, dir, want string) time.Time {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		got := state(dir)
		if got == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %s after %v:\n got %q\nwant %q", dir, waitLong, got, want)
		}
		pause(5 * time.Millisecond)
	}
}

// awaitSignal waits for the child's next HUP line and checks that it shows
// want and that no other signal came before it. It returns the line.
func awaitSignal(t *testing.T, d *dispenser, want string) line {
	t.Helper()
	ln, skipped := d.out.next(t, "HUP")
	if got := strings.TrimPrefix(ln.text, "HUP "); got != want {
		t.Fatalf("child was signalled with state\n %q\nwant %q", got, want)
	}
	for _, s := range skipped {
		if strings.HasPrefix(s, "HUP") {
			t.Fatalf("more than one signal: %q came before %q", s, ln.text)
		}
	}
	return ln
}

// warmUp puts key=value and waits for the signal showing want. dispenser
// holds reload signals back for a grace period after it starts the child;
// a test that measures a fault's timings warms up first, so that the hold
// does not count as the fault's.
func warmUp(t *testing.T, d *dispenser, cli *clientv3.Client, key, value, want string) {
	t.Helper()
	put(t, cli, key, value)
	awaitSignal(t, d, want)
}

// checkMarker puts key=value and checks that the child's very next signal
// shows want (the state with the marker): proof that the catch-up before
// sent exactly one signal.
func checkMarker(t *testing.T, d *dispenser, cli *clientv3.Client, key, value, want string) {
	t.Helper()
	put(t, cli, key, value)
	ln, skipped := d.out.next(t, "HUP")
	if got := strings.TrimPrefix(ln.text, "HUP "); got != want || len(skipped) != 0 {
		t.Fatalf("after the marker %s the next signal showed\n %q\nwant %q; lines before it: %q", key, got, want, skipped)
	}
}

// checkNoStale checks that the target holds nothing but the files of want
// (paths as in files), dispenser's ..data link and one generation
// directory, and no empty directory.
func checkNoStale(t *testing.T, dir string, want map[string]string, unmanaged ...string) {
	t.Helper()
	top := map[string]bool{"..data": true}
	for p := range want {
		first, _, _ := strings.Cut(p, string(filepath.Separator))
		top[first] = true
	}
	for _, u := range unmanaged {
		top[u] = true
	}
	// The current generation, and at most one retired generation that the
	// writer keeps to reuse for a later change (internal/writer, "Cost").
	// The daemon removes a replaced retired generation (Writer.Tidy) just
	// after it signalled the child, so the test may look in between: wait
	// (bounded) for that removal before judging.
	var stale []string
	gens := 0
	deadline := time.Now().Add(waitLong)
	for {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		stale, gens = nil, 0
		for _, e := range entries {
			n := e.Name()
			switch {
			case top[n]:
			case len(n) > 2 && strings.HasPrefix(n, "..") && n[2] >= '0' && n[2] <= '9':
				gens++
			default:
				stale = append(stale, n)
			}
		}
		if (len(stale) == 0 && gens >= 1 && gens <= 2) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range stale {
		t.Errorf("stale entry %q in the target", n)
	}
	if gens < 1 || gens > 2 {
		t.Errorf("%d generation directories in the target, want the current one and at most one retired", gens)
	}
	checkNoEmptyDir(t, filepath.Join(dir, "..data"))
}

func checkNoEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("read %s: %v", dir, err)
		return
	}
	if len(entries) == 0 {
		t.Errorf("stale empty directory %s", dir)
	}
	for _, e := range entries {
		if e.IsDir() {
			checkNoEmptyDir(t, filepath.Join(dir, e.Name()))
		}
	}
}
