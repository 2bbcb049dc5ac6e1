// Package etcdproc runs etcd as real operating-system processes, for tests
// only: a test can kill a member with SIGKILL, stop it with SIGTERM, and
// start it again with the same data directory on the same (or another)
// client port, which an in-process embedded etcd cannot do.
//
// The etcd binary is built once per test process from this module's pinned
// go.etcd.io/etcd/server/v3 (see ./etcdserver), so a machine with only Go
// can run the tests. Members listen on 127.0.0.1 only. Everything etcd
// prints goes to one log file per member in t.TempDir(), whose tail is
// shown when the test fails. Every process is killed at t.Cleanup.
//
// StartGRPCProxy runs etcd's own gRPC proxy (`etcd grpc-proxy start`) from
// the same binary, in front of a cluster.
//
// It deliberately does not fake faults (no fault-injecting proxies, no
// injected errors) and does not provide TLS or auth; it is not for
// production use.
package etcdproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Timeout bounds every wait in this package: a member becoming healthy, a
// process exiting after SIGTERM, a client request. It is generous because
// CI is a slow, shared 2-core machine; a passing test never waits it out.
const Timeout = 60 * time.Second

// Cluster is a set of etcd members started together. Its methods must be
// called from the test goroutine.
type Cluster struct {
	t       testing.TB
	bin     string
	token   string
	flags   []string // further etcd flags of every member
	members []*Member
}

// StartCluster builds etcd if needed, starts an n-member cluster on free
// 127.0.0.1 ports, every member with the further etcd flags given (e.g.
// "--watch-progress-notify-interval=1s"), and waits until every member
// reports healthy. It fails the test if that does not happen within
// Timeout.
func StartCluster(t testing.TB, n int, flags ...string) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdproc: StartCluster(%d): need at least one member", n)
	}
	c := &Cluster{t: t, bin: Build(t), token: fmt.Sprintf("etcdproc-%d", time.Now().UnixNano()), flags: flags}
	logDir := t.TempDir()
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		c.members = append(c.members, &Member{
			c:          c,
			index:      i,
			name:       name,
			dataDir:    filepath.Join(t.TempDir(), name),
			logPath:    filepath.Join(logDir, name+".log"),
			clientPort: FreePort(t),
			peerPort:   FreePort(t),
		})
	}
	t.Cleanup(c.cleanup)
	for _, m := range c.members { // all first: none is healthy without a quorum
		m.spawn(m.clientPort)
	}
	for _, m := range c.members {
		m.awaitHealthy()
	}
	return c
}

// Member returns member i, counting from 0.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Size is the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints returns every member's client URL, e.g.
// "http://127.0.0.1:41234", running or not, in member order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.Endpoint()
	}
	return out
}

// Client returns a client of all members, closed at test cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, c.Endpoints())
}

// Leader returns the index of the current leader as seen by the running
// members, polling until a running member is known to lead or ctx ends.
// Right after the leader is killed the survivors may still name it for an
// election timeout; Leader waits that out.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		for _, m := range c.members {
			if !m.Running() {
				continue
			}
			if leader, ok := m.leader(ctx); ok {
				for _, other := range c.members {
					if other.id == leader && other.Running() {
						return other.index, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcdproc: no leader known: %w", context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cleanup kills every member still running and, if the test failed, shows
// the end of each member's log.
func (c *Cluster) cleanup() {
	for _, m := range c.members {
		if m.Running() {
			m.signalAndWait(syscall.SIGKILL)
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, m := range c.members {
		c.t.Logf("etcdproc: last lines of %s (%s):\n%s", m.name, m.logPath, tail(m.logPath, 4096))
	}
}

// leader asks this member for the cluster's leader and remembers the
// member's own id.
func (m *Member) leader(ctx context.Context) (uint64, bool) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.Endpoint()},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return 0, false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, m.Endpoint())
	if err != nil || st.Leader == 0 {
		return 0, false
	}
	m.id = st.Header.MemberId
	return st.Leader, true
}

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdproc: client of %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdproc: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// healthy reports whether the member at endpoint answers /health with
// "health":"true".
func healthy(ctx context.Context, endpoint string) bool {
	return healthyAt(ctx, endpoint+"/health")
}

// healthyAt reports whether a GET of url answers "health":"true".
func healthyAt(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"health":"true"`)
}

// tail returns up to the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// exitedBy reports how a process ended, for messages.
func exitedBy(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func itoa(i int) string { return strconv.Itoa(i) }
