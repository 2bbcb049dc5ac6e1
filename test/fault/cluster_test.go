package fault_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"go.uber.org/zap"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// TestFault4Cluster: dispenser knows all three members of a cluster.
// (a) The leader is killed with SIGKILL, and a change made on the
// survivors must reach the disk; (b) each member in turn is stopped (so at
// some point the one dispenser's watch is attached to), and a change made
// on the other two must reach the disk each time. Every change gives
// exactly one signal.
func TestFault4Cluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	c := etcdproc.StartCluster(t, 3)
	put(t, c.Client(t), "/q/a", "0")
	dir := t.TempDir()
	d := startDispenser(t, c.Endpoints(), nil, append([]string{"-p", "/q", "-t", dir, "-s", "HUP"}, childArgv(dir, modeServe)...)...)
	if ln, _ := d.out.next(t, "ready"); ln.text != "ready a=0" {
		t.Fatalf("child started with %q", ln.text)
	}
	warmUp(t, d, c.Client(t), "/q/w", "1", "a=0,w=1")
	want := map[string]string{"a": "0", "w": "1"}

	// (a) leader killed.
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Member(leader).Kill()
	killed := time.Now()
	// Wait for the new leader first: a put sent during the election would
	// time out after 7 s and measure etcd rather than dispenser.
	next, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Now()
	survivors := survivorClient(t, c, leader)
	put(t, survivors, "/q/a", "leader-killed")
	changed := time.Now()
	want["a"] = "leader-killed"
	fileAt := waitState(t, dir, format(want))
	sig := awaitSignal(t, d, format(want))
	t.Logf("fault 4a (leader m%d killed, m%d elected after %v): change→file %v, kill→file %v, change→signal %v",
		leader, next, elected.Sub(killed), fileAt.Sub(changed), fileAt.Sub(killed), sig.at.Sub(changed))
	want["marker"] = "a"
	checkMarker(t, d, survivors, "/q/marker", "a", format(want))
	c.Member(leader).Start()

	// (b) each member stopped in turn.
	for i := range c.Size() {
		m := c.Member(i)
		m.Stop()
		stopped := time.Now()
		survivors := survivorClient(t, c, i)
		v := fmt.Sprintf("m%d-stopped", i)
		put(t, survivors, "/q/a", v)
		changed := time.Now()
		want["a"] = v
		fileAt := waitState(t, dir, format(want))
		sig := awaitSignal(t, d, format(want))
		t.Logf("fault 4b (m%d stopped): change→file %v, stop→file %v, change→signal %v",
			i, fileAt.Sub(changed), fileAt.Sub(stopped), sig.at.Sub(changed))
		want["marker"] = v
		checkMarker(t, d, survivors, "/q/marker", v, format(want))
		m.Start()
	}
	checkNoStale(t, dir, want)
}

// survivorClient is a client of every member but the one at index down.
func survivorClient(t *testing.T, c *etcdproc.Cluster, down int) *clientv3.Client {
	t.Helper()
	var eps []string
	for i, ep := range c.Endpoints() {
		if i != down {
			eps = append(eps, ep)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
