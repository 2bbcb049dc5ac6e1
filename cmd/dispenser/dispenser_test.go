package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestStartsChildAfterFilesAndSignalsOnChange is the original's promise:
// the child starts only once every file exists, and gets SIGHUP after a
// change, seeing the new content.
func TestStartsChildAfterFilesAndSignalsOnChange(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/certs/tls.crt", "crt1", "/certs/tls.key", "key1", "/certsold/x", "not mine")
	dir := t.TempDir()
	r := start(t, s, append([]string{"--prefix=/certs", "--target", dir, "-s", "SIGHUP"}, childArgs(dir, "serve")...)...)

	if got, _ := r.out.next(t, "ready"); got != "ready tls.crt=crt1,tls.key=key1" {
		t.Fatalf("child started with %q, want both files present", got)
	}
	put(t, s, "/certs/tls.crt", "crt2")
	if got, _ := r.out.next(t, "HUP"); got != "HUP tls.crt=crt2,tls.key=key1" {
		t.Fatalf("after the change the child saw %q", got)
	}
}

// TestOneTransactionOneSignal: 50 keys in one transaction reach the child as
// one signal, and at that moment every file is new. A no-op put (same value)
// and a put of a key whose value is unchanged send nothing.
func TestOneTransactionOneSignal(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	txn := func(v string) {
		t.Helper()
		var ops []clientv3.Op
		for i := range 50 {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/app/k%02d", i), v))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatalf("txn: %v", err)
		}
	}
	txn("v1")
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/app/", "-t", dir, "-s", "HUP"}, childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")

	for _, v := range []string{"v2", "v3"} {
		txn(v)
		line, _ := r.out.next(t, "HUP")
		if n := strings.Count(line, "="+v); n != 50 {
			t.Fatalf("at the signal for %s the child saw %d of 50 files new: %q", v, n, line)
		}
	}
	txn("v3") // same values: a new revision, but no file changes
	if _, err := c.Put(ctx, "/app/marker", "m"); err != nil {
		t.Fatal(err)
	}
	line, skipped := r.out.next(t, "HUP")
	if !strings.Contains(line, "marker=m") || len(skipped) != 0 {
		t.Fatalf("after a no-op txn and a marker put got %q (skipped %q), want only the marker's signal", line, skipped)
	}
}

func TestNestedKeysAndDeletes(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/p/a/b/c.conf", "deep", "/p/top", "t")
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/p", "-t", dir, "-s", "SIGUSR1"}, childArgs(dir, "serve")...)...)
	if got, _ := r.out.next(t, "ready"); got != "ready a/b/c.conf=deep,top=t" {
		t.Fatalf("child saw %q", got)
	}
	c := s.Client(t)
	if _, err := c.Delete(context.Background(), "/p/a/b/c.conf"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.out.next(t, "USR1"); got != "USR1 top=t" {
		t.Fatalf("after delete the child saw %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory a left behind after its only key was deleted: %v", err)
	}
}

// TestExitStatusMirrored: dispenser exits as its child did.
func TestExitStatusMirrored(t *testing.T) {
	s := etcdtest.Start(t)
	for _, tc := range []struct {
		mode string
		want int
	}{
		{"exit=0", 0},
		{"exit=3", 3},
		{"kill-self", 128 + int(syscall.SIGKILL)},
		{"term-self", 128 + int(syscall.SIGTERM)},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			r := start(t, s, append([]string{"-p", "/x/", "-t", dir}, childArgs(dir, tc.mode)...)...)
			if got := report(&bytes.Buffer{}, r.wait(t)); got != tc.want {
				t.Fatalf("exit status = %d, want %d; log:\n%s", got, tc.want, r.errs.String())
			}
		})
	}
}

// TestSignalsForwarded sends real signals to this process, where run()
// listens, and expects each at the child.
func TestSignalsForwarded(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir}, childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	for _, name := range []string{"HUP", "USR1", "USR2", "WINCH", "QUIT", "ALRM", "CONT"} {
		sig, _ := parseSig(name)
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		r.out.next(t, name)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r.out.next(t, "TERM")
	if err := r.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil (child exited 0)", err)
	}
}

// TestStopKillsStubbornChild: a child that ignores SIGTERM is SIGKILLed after
// --kill-timeout, and dispenser reports that death.
func TestStopKillsStubbornChild(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir, "--kill-timeout=5s"}, childArgs(dir, "ignore-term")...)...)
	r.out.next(t, "ready")
	r.stop()
	r.out.next(t, "TERM")
	if got, want := report(&bytes.Buffer{}, r.wait(t)), 128+int(syscall.SIGKILL); got != want {
		t.Fatalf("exit status = %d, want %d", got, want)
	}
}

func TestOnceWritesAndExits(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/once/a", "1", "/once/b/c", "2")
	dir := t.TempDir()
	r := start(t, s, "-p", "/once", "-t", dir, "--once")
	if err := r.wait(t); err != nil {
		t.Fatalf("--once: %v", err)
	}
	if got, want := contents(dir), "a=1,b/c=2"; got != want {
		t.Fatalf("files = %q, want %q", got, want)
	}
}

// TestHostileKeysSkipped: keys that would escape the target are skipped and
// logged; the good keys beside them are written, nothing lands outside.
func TestHostileKeysSkipped(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/h/../escape", "x", "/h/ok", "fine", "/h/..data", "x", "/h//abs", "x")
	parent := t.TempDir()
	dir := filepath.Join(parent, "target")
	r := start(t, s, "-p", "/h", "-t", dir, "--once")
	if err := r.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := contents(dir), "ok=fine"; got != want {
		t.Fatalf("files = %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(parent, "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key wrote outside the target: %v", err)
	}
	if log := r.errs.String(); !strings.Contains(log, "/h/../escape") {
		t.Fatalf("the log does not name the rejected key:\n%s", log)
	}
}

// TestUsageErrors: each bad command line is one clear line and exit 2,
// before anything is written.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-t", dir}, "--prefix is required"},
		{[]string{"-p", "/x"}, "--target is required"},
		{[]string{"-p", "/x", "-t", dir, "-s", "SIGFOO"}, "HUP"},
		{[]string{"-p", "/x", "-t", dir, "-m", "999"}, "--mode"},
		{[]string{"-p", "/x", "-t", dir, "-o", "no-such-user-xyz"}, "--owner"},
		{[]string{"-p", "/x", "-t", dir, "-g", "no-such-group-xyz"}, "--group"},
		{[]string{"-p", "/x", "-t", dir, "--wait", "soon"}, "--wait"},
		{[]string{"-p", "/x", "-t", dir, "--log-format", "xml"}, "--log-format"},
		{[]string{"-p", "/x", "-t", dir, "--no-such-flag"}, "no-such-flag"},
		{[]string{"-p", "/x", "-t", dir, "--once", "--", "true"}, "--once"},
		{[]string{"-p", "/x", "-t", dir, "--run-as", "no-such-user-xyz", "--", "true"}, `--run-as: no user "no-such-user-xyz"`},
		{[]string{"-p", "/x", "-t", dir, "--run-as", "nobody:no-such-group-xyz", "--", "true"}, `--run-as: no group "no-such-group-xyz"`},
		{[]string{"-p", "/x", "-t", dir, "--run-as", "nobody"}, "--run-as sets the child's user, but no command is given"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, &bytes.Buffer{}, &stderr)
			code := report(&stderr, err)
			if code != 2 {
				t.Fatalf("exit status = %d, want 2; stderr:\n%s", code, stderr.String())
			}
			first := strings.SplitN(stderr.String(), "\n", 2)[0]
			if !strings.Contains(first, tc.want) || !strings.HasPrefix(first, "dispenser: ") {
				t.Fatalf("first line %q does not start with \"dispenser: \" and mention %q", first, tc.want)
			}
		})
	}
}

func TestTargetIsAFile(t *testing.T) {
	s := etcdtest.Start(t)
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := start(t, s, "-p", "/x", "-t", f, "--once")
	err := r.wait(t)
	var stderr bytes.Buffer
	if code := report(&stderr, err); code != 2 || !strings.Contains(stderr.String(), f) {
		t.Fatalf("exit %d, stderr %q: want 2 and an error naming %s", code, stderr.String(), f)
	}
	if b, _ := os.ReadFile(f); string(b) != "keep me" {
		t.Fatalf("the file given as --target was changed to %q", b)
	}
}

// TestStopOrder: on SIGTERM dispenser stops watching first, then forwards
// the signal and waits for the child.
func TestStopOrder(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir}, childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	log := r.errs.String()
	watch, stop, exit := strings.Index(log, "stopped watching etcd"), strings.Index(log, "stopping child"), strings.Index(log, "child exited")
	if watch < 0 || stop < watch || exit < stop {
		t.Fatalf("want stopped watching < stopping child < child exited in the log:\n%s", log)
	}
}

// TestWaitCoalesces: with --wait, a burst of puts becomes one write and one
// signal.
func TestWaitCoalesces(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/w", "-t", dir, "-s", "HUP", "--wait", "3s:60s"}, childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	put(t, s, "/w/k0", "v", "/w/k1", "v", "/w/k2", "v", "/w/k3", "v", "/w/k4", "v")
	line, _ := r.out.next(t, "HUP")
	if want := "HUP k0=v,k1=v,k2=v,k3=v,k4=v"; line != want {
		t.Fatalf("first signal saw %q, want all five keys at once: %q", line, want)
	}
	put(t, s, "/w/marker", "m")
	if line, skipped := r.out.next(t, "HUP"); !strings.Contains(line, "marker=m") || len(skipped) != 0 {
		t.Fatalf("next signal %q (skipped %q): want only the marker's", line, skipped)
	}
}

// TestEnvErrors: a bad etcd environment is one line naming the variable,
// exit 2, and the target is not touched.
func TestEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ETCD_ENDPOINTS": ""}, "ETCD_ENDPOINTS"},
		{map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:1", "ETCD_PASSWORD_FILE": "/nonexistent/pw"}, "ETCD_PASSWORD_FILE"},
		{map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:1", "ETCD_USERNAME": "u"}, "ETCD_PASSWORD"},
		{map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:1", "ETCD_INSECURE_SKIP_VERIFY": "maybe"}, "ETCD_INSECURE_SKIP_VERIFY"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			dir := t.TempDir()
			var stderr bytes.Buffer
			code := report(&stderr, run(context.Background(), []string{"-p", "/x", "-t", dir, "--once"}, &bytes.Buffer{}, &stderr))
			first := strings.SplitN(stderr.String(), "\n", 2)[0]
			if code != 2 || !strings.Contains(first, tc.want) {
				t.Fatalf("exit %d, first line %q: want 2 and a line naming %s", code, first, tc.want)
			}
		})
	}
}

// TestInitialTimeout: with nothing listening, --initial-timeout makes
// dispenser give up with one clear line and exit 1, both without and with
// credentials (with them, connecting itself has to reach etcd).
func TestInitialTimeout(t *testing.T) {
	port := 1 // nothing listens on port 1, and nothing can take it
	for _, user := range []string{"", "someone"} {
		t.Run("user="+user, func(t *testing.T) {
			t.Setenv("ETCD_ENDPOINTS", fmt.Sprintf("http://127.0.0.1:%d", port))
			if user != "" {
				t.Setenv("ETCD_USERNAME", user)
				t.Setenv("ETCD_PASSWORD", "pw")
			}
			var stderr bytes.Buffer
			code := report(&stderr, run(context.Background(), []string{"-p", "/x", "-t", t.TempDir(), "--initial-timeout=1s"}, &bytes.Buffer{}, &stderr))
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if code != 1 || !strings.Contains(last, "--initial-timeout") {
				t.Fatalf("exit %d, last line %q: want 1 and a line naming --initial-timeout", code, last)
			}
		})
	}
}

// TestSecondStopSignalKills: a second SIGTERM does not wait out
// --kill-timeout: the child (which ignores SIGTERM) is killed at once.
func TestSecondStopSignalKills(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/x/", "-t", dir, "--kill-timeout=10m"}, childArgs(dir, "ignore-term")...)...)
	r.out.next(t, "ready")
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.out.next(t, "INT") // forwarded as the stop signal; this child ignores it
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got, want := report(&bytes.Buffer{}, r.wait(t)), 128+int(syscall.SIGKILL); got != want {
		t.Fatalf("exit status = %d, want %d (killed after the second stop signal)", got, want)
	}
}

// TestSidecar: without a child, dispenser keeps the directory in sync and
// stops cleanly.
func TestSidecar(t *testing.T) {
	s := etcdtest.Start(t)
	dir := t.TempDir()
	r := start(t, s, "-p", "/side", "-t", dir)
	r.errs.containing(t, "target in sync")
	put(t, s, "/side/a", "1")
	r.errs.containing(t, "files updated")
	if got := contents(dir); got != "a=1" {
		t.Fatalf("files = %q, want a=1", got)
	}
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("sidecar stop: %v", err)
	}
}

// TestPlainLayoutJSONLogMode runs the other layout, JSON logs and a mode
// through the command line.
func TestPlainLayoutJSONLogMode(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/pl/a", "1", "/pl/d/b", "2")
	dir := t.TempDir()
	r := start(t, s, "-p", "/pl", "-t", dir, "--layout=plain", "--log-format=json", "-m", "0640", "-o", "65534", "-g", "65534", "--once")
	if err := r.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, name := range []string{"a", "d/b"} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 || st.Uid != 65534 || st.Gid != 65534 {
			t.Fatalf("%s: mode %v uid %d gid %d; want a regular file 0640 owned by 65534:65534", name, fi.Mode(), st.Uid, st.Gid)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(r.errs.String()), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Fatalf("log line %q is not JSON", line)
		}
	}
}

// TestReaderNeverSeesAMix: while 100 transactions each replace a
// certificate and its key, a reader that resolves ..data and reads both
// files of that generation always gets a matching pair.
func TestReaderNeverSeesAMix(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/tls/tls.crt", "c-1", "/tls/tls.key", "k-1")
	dir := t.TempDir()
	r := start(t, s, "-p", "/tls", "-t", dir)
	r.errs.containing(t, "target in sync")

	stop := make(chan struct{})
	type result struct{ reads, retries int }
	done := make(chan result, 1)
	mixes := make(chan string, 1)
	go func() {
		var res result
		deadline := time.Now().Add(5 * time.Minute)
		for i := 0; i < 10_000_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				done <- res
				return
			default:
			}
			gen, err := os.Readlink(filepath.Join(dir, "..data"))
			if err != nil {
				res.retries++
				continue
			}
			crt, err1 := os.ReadFile(filepath.Join(dir, gen, "tls.crt"))
			key, err2 := os.ReadFile(filepath.Join(dir, gen, "tls.key"))
			if err1 != nil || err2 != nil { // that generation was just removed
				res.retries++
				continue
			}
			res.reads++
			if strings.TrimPrefix(string(crt), "c") != strings.TrimPrefix(string(key), "k") {
				select {
				case mixes <- fmt.Sprintf("%s with %s in %s", crt, key, gen):
				default:
				}
			}
		}
		done <- res
	}()

	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for i := range 100 {
		v := fmt.Sprint(i)
		if _, err := c.Txn(ctx).Then(clientv3.OpPut("/tls/tls.crt", "c"+v), clientv3.OpPut("/tls/tls.key", "k"+v)).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; contents(dir) != "tls.crt=c99,tls.key=k99"; i++ {
		if i > 200 {
			t.Fatalf("files are %q after 200 writes, want the last transaction's", contents(dir))
		}
		r.errs.containing(t, "files updated") // wait for the next write
	}
	close(stop)
	res := <-done
	t.Logf("%d consistent reads, %d retries on a removed generation", res.reads, res.retries)
	select {
	case m := <-mixes:
		t.Fatalf("reader saw a mix: %s", m)
	default:
	}
	if res.reads == 0 {
		t.Fatalf("the reader never read a pair")
	}
}
