package fault_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// TestFaultRestart covers faults 1–3: etcd goes away (killed with SIGKILL,
// or stopped with SIGTERM), keys are changed and deleted where dispenser
// cannot see them (the member restarted on another client port, with the
// same data), in case 3 the history is compacted and defragmented there
// too, and then etcd comes back on the original port. Every change and
// delete must reach the disk with exactly one signal and no stale file.
// Then etcd is taken down and brought back once more without changes: that
// must not signal at all.
func TestFaultRestart(t *testing.T) {
	for _, tc := range []struct {
		fault   string
		down    func(*etcdproc.Member)
		compact bool
		health  bool // also check /healthz and /readyz
		behind  int  // extra revisions made while down
	}{
		{fault: "1 (kill -9)", down: (*etcdproc.Member).Kill},
		// etcd sends a catch-up of more than 1000 revisions in several
		// watch responses; it must still be one signal.
		{fault: "1b (kill -9, 1500 revisions behind)", down: (*etcdproc.Member).Kill, behind: 1500},
		{fault: "2 (graceful stop)", down: (*etcdproc.Member).Stop, health: true},
		{fault: "3 (compact+defrag while down)", down: (*etcdproc.Member).Stop, compact: true},
	} {
		t.Run(strings.Fields(tc.fault)[0], func(t *testing.T) {
			if tc.behind > 0 && testing.Short() {
				t.Skip("makes many revisions")
			}
			c := etcdproc.StartCluster(t, 1)
			m := c.Member(0)
			cli := m.Client(t)
			put(t, cli, "/f/a", "1", "/f/b", "1", "/f/gone", "1", "/f/dir/x", "1")
			dir := t.TempDir()
			args := []string{"-p", "/f", "-t", dir, "-s", "HUP"}
			var health string
			if tc.health {
				health = "127.0.0.1:" + fmt.Sprint(etcdproc.FreePort(t))
				// A short probe, so that a dead etcd shows within seconds.
				args = append(args, "--listen-http", health, "--watch-probe", "500ms")
			}
			d := startDispenser(t, c.Endpoints(), nil, append(args, childArgv(dir, modeServe)...)...)
			if ln, _ := d.out.next(t, "ready"); ln.text != "ready a=1,b=1,dir/x=1,gone=1" {
				t.Fatalf("child started with %q", ln.text)
			}
			warmUp(t, d, cli, "/f/w", "1", "a=1,b=1,dir/x=1,gone=1,w=1")
			if tc.health {
				waitHTTP(t, health, "/readyz", http.StatusOK)
				waitHTTP(t, health, "/healthz", http.StatusOK)
			}

			port := m.ClientPort()
			tc.down(m)
			if tc.health {
				waitHTTP(t, health, "/healthz", http.StatusServiceUnavailable)
			}
			m.StartOnPort(etcdproc.FreePort(t)) // where dispenser does not look
			elsewhere := m.Client(t)
			put(t, elsewhere, "/f/a", "2", "/f/new", "1", "/f/sub/y", "1")
			del(t, elsewhere, "/f/gone", "/f/dir/x")
			for i := range tc.behind {
				put(t, elsewhere, "/f/many", fmt.Sprint(i))
			}
			if tc.compact {
				compactAndDefrag(t, elsewhere, m.Endpoint())
			}
			tc.down(m)
			m.StartOnPort(port)
			back := time.Now()

			want := map[string]string{"a": "2", "b": "1", "new": "1", "sub/y": "1", "w": "1"}
			if tc.behind > 0 {
				want["many"] = fmt.Sprint(tc.behind - 1)
			}
			fileAt := waitState(t, dir, format(want))
			sig := awaitSignal(t, d, format(want))
			t.Logf("fault %s: back→file %v, back→signal %v", tc.fault, fileAt.Sub(back), sig.at.Sub(back))
			checkNoStale(t, dir, want)
			if tc.health {
				waitHTTP(t, health, "/healthz", http.StatusOK)
			}
			cli = m.Client(t)
			want["marker"] = "1"
			checkMarker(t, d, cli, "/f/marker", "1", format(want))

			// Down and back with nothing changed: no signal at all.
			tc.down(m)
			m.Start()
			want["marker"] = "2"
			checkMarker(t, d, m.Client(t), "/f/marker", "2", format(want))
			checkNoStale(t, dir, want)
		})
	}
}

// compactAndDefrag compacts the whole history up to now and defragments
// the member, so that a watch resuming from an old revision must fail.
func compactAndDefrag(t *testing.T, cli *clientv3.Client, endpoint string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	resp, err := cli.Get(ctx, "/f/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := cli.Defragment(ctx, endpoint); err != nil {
		t.Fatalf("defragment: %v", err)
	}
}

// waitHTTP polls http://addr+path until it answers with status, failing
// the test after waitLong.
func waitHTTP(t *testing.T, addr, path string, status int) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var last string
	for {
		got, body := httpGet(addr + path)
		if got == status {
			return
		}
		last = fmt.Sprintf("%d %s", got, body)
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: want %d within %v, last answer %s", path, status, waitLong, last)
		}
		pause(20 * time.Millisecond)
	}
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(b))
}
