package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// waitLimit bounds every single wait: a build, etcd becoming healthy, a
// signal reaching the child, a process exiting. A healthy run never waits
// it out.
const waitLimit = 2 * time.Minute

// env is what every figure shares: the binaries, one etcd process and a
// client of it, and a temporary directory removed by close.
type env struct {
	stderr    io.Writer
	dir       string // temporary, on tmpfs when there is one
	dispenser string // binaries built from this tree
	etcha     string
	self      string // this program, re-executed as the child
	etcdBin   string
	peer      string        // etcd's peer URL, the same on every start
	endpoint  string        // etcd's client URL dispenser is given
	etcd      *exec.Cmd     // nil while stopped
	etcdDone  chan struct{} // closed when etcd has exited
	procs     int           // dispensers started, to name their logs
	cli       *clientv3.Client
}

// setup builds the binaries and starts etcd. On error it has cleaned up.
func setup(ctx context.Context, cfg config, stderr io.Writer) (_ *env, err error) {
	e := &env{stderr: stderr}
	if e.dir, err = os.MkdirTemp(tempBase(), "dispenser-bench-"); err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.self, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find this program to run it as the child: %w", err)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	e.logf("building etcd, dispenser (-tags noembed) and etcha from %s", root)
	etcd := filepath.Join(e.dir, "etcd")
	began := time.Now()
	e.dispenser, e.etcha = filepath.Join(e.dir, "dispenser"), filepath.Join(e.dir, "etcha")
	builds := [][]string{
		{"-o", etcd, "./internal/etcdproc/etcdserver"},
		{"-trimpath", "-tags", "noembed", "-o", e.dispenser, "./cmd/dispenser"},
		{"-trimpath", "-o", e.etcha, "./cmd/etcha"},
	}
	// A given binary replaces its build (etcha first: deleting it does not move dispenser's).
	if cfg.etcha != "" {
		if e.etcha, err = filepath.Abs(cfg.etcha); err != nil {
			return nil, err
		}
		e.logf("measuring the etcha binary %s", e.etcha)
		builds = slices.Delete(builds, 2, 3)
	}
	if cfg.dispenser != "" {
		if e.dispenser, err = filepath.Abs(cfg.dispenser); err != nil {
			return nil, err
		}
		e.logf("measuring the dispenser binary %s", e.dispenser)
		builds = slices.Delete(builds, 1, 2)
	}
	for _, b := range builds {
		if err := goBuild(ctx, root, b...); err != nil {
			return nil, err
		}
	}
	e.logf("built in %v", time.Since(began).Round(time.Millisecond))
	if err := e.startEtcd(ctx, etcd); err != nil {
		return nil, err
	}
	return e, nil
}

// tempBase is where the temporary directory goes: tmpfs if there is one.
func tempBase() string {
	if exists("/dev/shm") {
		return "/dev/shm"
	}
	return os.TempDir()
}

// close stops etcd and removes the temporary directory.
func (e *env) close() {
	if e.cli != nil {
		e.cli.Close()
	}
	e.stopEtcd(syscall.SIGTERM)
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w; bench needs the Go toolchain on PATH", err)
	}
	gomod := strings.TrimSpace(string(b))
	root := filepath.Dir(gomod)
	if gomod == "" || gomod == os.DevNull || !exists(filepath.Join(root, "cmd", "dispenser")) {
		return "", errors.New("not inside the dispenser repository; run bench from it: go run ./bench")
	}
	return root, nil
}

func goBuild(ctx context.Context, root string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"build"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", args[len(args)-1], err, out)
	}
	return nil
}

// startEtcd starts one etcd member on free 127.0.0.1 ports with its data
// in e.dir, fsync on (etcd's default), and waits until it answers.
func (e *env) startEtcd(ctx context.Context, bin string) (err error) {
	e.etcdBin, e.peer = bin, "http://127.0.0.1:"+freePort()
	e.endpoint = "http://127.0.0.1:" + freePort()
	if err := e.spawnEtcd(e.endpoint); err != nil {
		return err
	}
	if e.cli, err = newClient(e.endpoint); err != nil {
		return err
	}
	_, err = e.awaitEtcd(ctx, e.endpoint)
	return err
}

// spawnEtcd starts the etcd process serving clients on client, without
// waiting for it. Its data directory and peer URL are the same on every
// start, so a restart is the same member with the same data.
func (e *env) spawnEtcd(client string) error {
	log, err := os.OpenFile(filepath.Join(e.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the process has its own copy
	cmd := exec.Command(e.etcdBin, "--name", "bench", "--data-dir", filepath.Join(e.dir, "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", e.peer, "--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "bench="+e.peer, "--logger", "zap", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() // owned by e: stopEtcd waits for it
	e.etcd, e.etcdDone = cmd, done
	return nil
}

// stopEtcd stops the etcd process with sig; after SIGTERM, SIGKILL
// follows if it is still running after waitLimit. (With a client's watch
// open, etcd takes seconds to stop on SIGTERM.)
func (e *env) stopEtcd(sig syscall.Signal) {
	if e.etcd == nil {
		return
	}
	e.etcd.Process.Signal(sig)
	select {
	case <-e.etcdDone:
	case <-time.After(waitLimit):
		e.etcd.Process.Kill()
		<-e.etcdDone
	}
	e.etcd = nil
}

// awaitEtcd returns when a new client of endpoint has read from etcd: the
// time etcd was ready, to within a few milliseconds (it polls every 2 ms,
// first for the port to accept, so no client backoff delays the answer).
func (e *env) awaitEtcd(ctx context.Context, endpoint string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	var err error
	for {
		var conn net.Conn
		if conn, err = net.DialTimeout("tcp", strings.TrimPrefix(endpoint, "http://"), time.Second); err == nil {
			conn.Close()
			var c *clientv3.Client
			if c, err = newClient(endpoint); err == nil {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				_, err = c.Get(rctx, "health")
				rcancel()
				c.Close()
				if err == nil {
					return time.Now(), nil
				}
			}
		}
		select {
		case <-e.etcdDone:
			b, _ := os.ReadFile(filepath.Join(e.dir, "etcd.log"))
			return time.Time{}, fmt.Errorf("etcd exited at start:\n%s", tail(b))
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("etcd not answering on %s after %v: %w", endpoint, waitLimit, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func newClient(endpoint string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return c, nil
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "0"
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// tail is the end of a log, enough to see why something failed.
func tail(b []byte) string {
	return string(b[max(0, len(b)-4096):])
}
