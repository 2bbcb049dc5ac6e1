package etcdproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GRPCProxy is one `etcd grpc-proxy start` process: etcd's own gRPC proxy,
// which serves the etcd API to many clients over one connection to the
// cluster and coalesces their watches of the same range into one watch.
// Its methods must be called from the test goroutine.
type GRPCProxy struct {
	t       testing.TB
	addr    string // 127.0.0.1:port
	logPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result; read only after done
}

// StartGRPCProxy builds etcd if needed, starts its gRPC proxy on a free
// 127.0.0.1 port in front of endpoints (client URLs, e.g.
// Cluster.Endpoints()) with any further flags of `etcd grpc-proxy start`,
// and waits until the proxy serves requests through to the cluster. The
// proxy is killed at t.Cleanup; its log is shown if the test failed.
func StartGRPCProxy(t testing.TB, endpoints []string, flags ...string) *GRPCProxy {
	t.Helper()
	bin := Build(t)
	dir := t.TempDir()
	p := &GRPCProxy{t: t, addr: "127.0.0.1:" + itoa(FreePort(t)), logPath: filepath.Join(dir, "grpc-proxy.log")}
	hosts := make([]string, len(endpoints))
	for i, e := range endpoints {
		hosts[i] = strings.TrimPrefix(e, "http://")
	}
	log, err := os.Create(p.logPath)
	if err != nil {
		t.Fatalf("etcdproc: open proxy log: %v", err)
	}
	defer log.Close() // the child has its own copy
	args := append([]string{"grpc-proxy", "start",
		"--endpoints", strings.Join(hosts, ","),
		"--listen-addr", p.addr,
		"--advertise-client-url", p.addr, // for its /proxy/health
		"--data-dir", filepath.Join(dir, "data"),
	}, flags...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("etcdproc: start grpc-proxy: %v", err)
	}
	p.done = make(chan struct{})
	go func() { // owned by p: cleanup waits for done
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	p.awaitHealthy()
	return p
}

// Endpoint is the proxy's client URL, e.g. "http://127.0.0.1:41234".
func (p *GRPCProxy) Endpoint() string { return "http://" + p.addr }

// Pid is the proxy's process id.
func (p *GRPCProxy) Pid() int { return p.cmd.Process.Pid }

// Client returns a client of the proxy, closed at test cleanup.
func (p *GRPCProxy) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, []string{p.Endpoint()})
}

// Log returns what the proxy has logged so far.
func (p *GRPCProxy) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// awaitHealthy polls /proxy/health, which answers true once a Get through
// the proxy reaches the cluster.
func (p *GRPCProxy) awaitHealthy() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !healthyAt(ctx, p.Endpoint()+"/proxy/health") {
		select {
		case <-p.done:
			p.t.Fatalf("etcdproc: grpc-proxy exited while starting (%s); log:\n%s", exitedBy(p.waitErr), tail(p.logPath, 4096))
		case <-ctx.Done():
			p.t.Fatalf("etcdproc: grpc-proxy not healthy after %v; log:\n%s", Timeout, tail(p.logPath, 4096))
		case <-tick.C:
		}
	}
}

func (p *GRPCProxy) cleanup() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	if p.t.Failed() {
		p.t.Logf("etcdproc: last lines of the grpc-proxy log (%s):\n%s", p.logPath, tail(p.logPath, 4096))
	}
}

// String names the proxy for messages.
func (p *GRPCProxy) String() string { return fmt.Sprintf("grpc-proxy %s", p.addr) }
