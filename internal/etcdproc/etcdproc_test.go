package etcdproc_test

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	etcdproc.RemoveBuilds()
	if code == 0 {
		if leaked := leaktest.Leaked(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after all tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func get(t *testing.T, c *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), etcdproc.Timeout)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "<missing>"
	}
	return string(resp.Kvs[0].Value)
}

func put(t *testing.T, c *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), etcdproc.Timeout)
	defer cancel()
	if _, err := c.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// TestKillAndStopKeepData: a member killed with SIGKILL or stopped with
// SIGTERM comes back on the same port with its data.
func TestKillAndStopKeepData(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	m := c.Member(0)
	port := m.ClientPort()
	put(t, c.Client(t), "k", "v1")

	for _, tc := range []struct {
		name string
		down func()
	}{{"kill", m.Kill}, {"stop", m.Stop}} {
		t.Run(tc.name, func(t *testing.T) {
			pid := m.Pid()
			tc.down()
			if m.Running() || m.Pid() != 0 {
				t.Fatalf("after %s the member still runs", tc.name)
			}
			if err := syscallKill0(pid); err == nil {
				t.Fatalf("process %d still exists after %s", pid, tc.name)
			}
			m.Start()
			if got, want := m.ClientPort(), port; got != want {
				t.Fatalf("ClientPort() = %d after Start, want %d", got, want)
			}
			if got, want := get(t, m.Client(t), "k"), "v1"; got != want {
				t.Fatalf("after %s and Start, k = %q, want %q", tc.name, got, want)
			}
		})
	}
}

// TestStartOnPort: a member started on another port serves the same data
// there, and not on the old port; started on the old port again, it has
// the changes made meanwhile.
func TestStartOnPort(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	m := c.Member(0)
	port := m.ClientPort()
	put(t, m.Client(t), "k", "v1")
	m.Stop()
	m.StartOnPort(etcdproc.FreePort(t))
	if m.ClientPort() == port {
		t.Fatalf("StartOnPort kept the old port %d", port)
	}
	if got, want := c.Endpoints()[0], m.Endpoint(); got != want {
		t.Fatalf("Endpoints()[0] = %q, want %q", got, want)
	}
	put(t, m.Client(t), "k", "v2")
	m.Stop()
	m.StartOnPort(port)
	if got, want := get(t, m.Client(t), "k"), "v2"; got != want {
		t.Fatalf("back on port %d, k = %q, want %q", port, got, want)
	}
}

// TestClusterSurvivesLeaderKill: in a 3-member cluster the leader is
// killed, the survivors elect another one and accept writes, and the old
// leader catches up after Start.
func TestClusterSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member cluster")
	}
	c := etcdproc.StartCluster(t, 3)
	if got, want := len(c.Endpoints()), 3; got != want {
		t.Fatalf("len(Endpoints()) = %d, want %d", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdproc.Timeout)
	defer cancel()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Member(leader).Kill()
	next, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("Leader() = %d, the killed member", next)
	}
	put(t, c.Member(next).Client(t), "k", "after-kill")
	c.Member(leader).Start()
	if got, want := get(t, c.Member(leader).Client(t), "k"), "after-kill"; got != want {
		t.Fatalf("restarted old leader has k = %q, want %q", got, want)
	}
}

// syscallKill0 probes whether process pid exists (and is not yet reaped).
func syscallKill0(pid int) error { return syscall.Kill(pid, 0) }

// TestGRPCProxyServesTheCluster: a put through etcd's gRPC proxy is read
// back from the member, and the other way round.
func TestGRPCProxyServesTheCluster(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	p := etcdproc.StartGRPCProxy(t, c.Endpoints())
	viaProxy, direct := p.Client(t), c.Client(t)
	put(t, viaProxy, "a", "through the proxy")
	if got, want := get(t, direct, "a"), "through the proxy"; got != want {
		t.Errorf("get a from the member = %q, want %q", got, want)
	}
	put(t, direct, "b", "direct")
	if got, want := get(t, viaProxy, "b"), "direct"; got != want {
		t.Errorf("get b through the proxy = %q, want %q", got, want)
	}
}

// TestPauseStopsAnswering: a paused member answers nothing until resumed,
// then answers again.
func TestPauseStopsAnswering(t *testing.T) {
	c := etcdproc.StartCluster(t, 1)
	cli := c.Client(t)
	put(t, cli, "k", "v")
	c.Member(0).Pause()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := cli.Get(ctx, "k")
	cancel()
	if err == nil {
		t.Fatalf("get from a paused member succeeded")
	}
	c.Member(0).Resume()
	if got, want := get(t, cli, "k"), "v"; got != want {
		t.Errorf("get after Resume = %q, want %q", got, want)
	}
}
