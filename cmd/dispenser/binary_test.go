package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestBinaryReadmeFlow is the README's first command, for real: the built
// dispenser binary on its embedded etcd, a key put with the real etcdctl,
// the child signalled, then a real SIGTERM to dispenser and its exit status.
func TestBinaryReadmeFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	bin := t.TempDir()
	build(t, filepath.Join(bin, "dispenser"), "./")
	build(t, filepath.Join(bin, "etcdctl"), "go.etcd.io/etcd/etcdctl/v3")

	listen := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "dispenser"),
		"--embedded-etcd", t.TempDir(), "--embedded-etcd-listen", listen,
		"-p", "/demo", "-t", dir, "-s", "SIGHUP", "--", os.Args[0], childSentinel, dir, "serve")
	cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := newLines()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	out := newLines()
	go func() {
		io.Copy(out, bufio.NewReader(stdout))
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	if got, _ := out.next(t, "ready"); got != "ready " {
		t.Fatalf("child started with %q, want an empty target", got)
	}
	etcdctl := exec.Command(filepath.Join(bin, "etcdctl"), "--endpoints", listen, "put", "/demo/hello", "world")
	if b, err := etcdctl.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl put: %v: %s", err, b)
	}
	if got, _ := out.next(t, "HUP"); got != "HUP hello=world" {
		t.Fatalf("after etcdctl put the child saw %q", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out.next(t, "TERM")
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("dispenser exit after SIGTERM: %v (child exited 0, so should dispenser); stderr:\n%s", err, stderr.String())
		}
	case <-time.After(waitLong):
		t.Fatalf("dispenser did not exit within %v of SIGTERM; stderr:\n%s", waitLong, stderr.String())
	}
}

func build(t *testing.T, out, pkg string) {
	t.Helper()
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}
