package etcdproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is one etcd process of a Cluster, with its own data directory,
// peer port and client port. Its methods must be called from the test
// goroutine.
type Member struct {
	c          *Cluster
	index      int
	name       string
	dataDir    string
	logPath    string
	clientPort int
	peerPort   int
	id         uint64 // etcd member id, learnt from Status; 0 until then

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result; read only after done
}

// Name is the member's etcd name, "m0", "m1", ...
func (m *Member) Name() string { return m.name }

// ClientPort is the client port the member listens (or last listened) on.
func (m *Member) ClientPort() int { return m.clientPort }

// Endpoint is the member's client URL, e.g. "http://127.0.0.1:41234".
func (m *Member) Endpoint() string { return "http://127.0.0.1:" + itoa(m.clientPort) }

// Pid is the process id of the running member, or 0.
func (m *Member) Pid() int {
	if !m.Running() {
		return 0
	}
	return m.cmd.Process.Pid
}

// Running reports whether the member's process has been started and has
// not exited.
func (m *Member) Running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Client returns a client of this member only, closed at test cleanup.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, []string{m.Endpoint()})
}

// Kill sends SIGKILL and waits for the process to be gone: no shutdown
// notice reaches the clients, and nothing is flushed.
func (m *Member) Kill() {
	m.c.t.Helper()
	m.mustRun("Kill")
	m.signalAndWait(syscall.SIGKILL)
}

// Stop sends SIGTERM and waits for etcd's graceful shutdown. It fails the
// test (after a SIGKILL) if the process is still there after Timeout.
func (m *Member) Stop() {
	m.c.t.Helper()
	m.mustRun("Stop")
	began := time.Now()
	defer func() { m.c.t.Logf("etcdproc: %s stopped in %v", m.name, time.Since(began)) }()
	if !m.signalAndWait(syscall.SIGTERM) {
		m.c.t.Fatalf("etcdproc: %s did not exit within %v of SIGTERM; killed it", m.name, Timeout)
	}
}

// Start starts the stopped member again with the same data directory,
// peer port and client port, and waits until it is healthy.
func (m *Member) Start() {
	m.c.t.Helper()
	m.StartOnPort(m.clientPort)
}

// StartOnPort starts the stopped member with the same data directory and
// peer port but the given client port (clients that know only the old
// port cannot reach it), and waits until it is healthy. A later Start uses
// this port.
func (m *Member) StartOnPort(port int) {
	m.c.t.Helper()
	if m.Running() {
		m.c.t.Fatalf("etcdproc: %s.StartOnPort(%d) while running; Stop or Kill it first", m.name, port)
	}
	m.spawn(port)
	m.awaitHealthy()
}

func (m *Member) mustRun(op string) {
	m.c.t.Helper()
	if !m.Running() {
		m.c.t.Fatalf("etcdproc: %s.%s: member is not running", m.name, op)
	}
}

// spawn starts the etcd process on the given client port without waiting
// for it to be healthy. Flags for a new cluster are ignored by etcd once
// the data directory holds a member, so they are the same on every start.
func (m *Member) spawn(port int) {
	t := m.c.t
	t.Helper()
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("etcdproc: open log: %v", err)
	}
	defer log.Close() // the child has its own copy
	client := "http://127.0.0.1:" + itoa(port)
	peer := "http://127.0.0.1:" + itoa(m.peerPort)
	var initial []string
	for _, o := range m.c.members {
		initial = append(initial, o.name+"=http://127.0.0.1:"+itoa(o.peerPort))
	}
	cmd := exec.Command(m.c.bin, append([]string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-state", "new",
		"--initial-cluster-token", m.c.token,
		"--unsafe-no-fsync",
		"--logger", "zap",
		"--log-level", "warn",
	}, m.c.flags...)...)
	cmd.Stdout, cmd.Stderr = log, log
	fmt.Fprintf(log, "=== etcdproc: %s starting on client port %d at %s\n", m.name, port, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		t.Fatalf("etcdproc: start %s: %v", m.name, err)
	}
	m.cmd, m.clientPort, m.done = cmd, port, make(chan struct{})
	done := m.done
	go func() { // owned by m: every path that drops cmd waits for done
		m.waitErr = cmd.Wait()
		close(done)
	}()
}

// awaitHealthy polls /health until the member says it is healthy, failing
// the test if the process exits or Timeout passes first.
func (m *Member) awaitHealthy() {
	t := m.c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !healthy(ctx, m.Endpoint()) {
		select {
		case <-m.done:
			t.Fatalf("etcdproc: %s exited while starting (%s); log:\n%s", m.name, exitedBy(m.waitErr), tail(m.logPath, 4096))
		case <-ctx.Done():
			t.Fatalf("etcdproc: %s not healthy after %v; log:\n%s", m.name, Timeout, tail(m.logPath, 4096))
		case <-tick.C:
		}
	}
}

// signalAndWait sends sig and waits up to Timeout for the process to exit;
// after that it sends SIGKILL, waits for the exit, and returns false.
func (m *Member) signalAndWait(sig syscall.Signal) bool {
	m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
		return true
	case <-time.After(Timeout):
		m.cmd.Process.Kill()
		<-m.done
		return false
	}
}

// Pause stops the member with SIGSTOP: its connections stay open but it
// answers nothing, as a stuck process would, until Resume.
func (m *Member) Pause() {
	m.c.t.Helper()
	m.mustRun("Pause")
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		m.c.t.Fatalf("etcdproc: pause %s: %v", m.name, err)
	}
}

// Resume continues a member stopped by Pause (SIGCONT).
func (m *Member) Resume() {
	m.c.t.Helper()
	m.mustRun("Resume")
	if err := m.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		m.c.t.Fatalf("etcdproc: resume %s: %v", m.name, err)
	}
}
