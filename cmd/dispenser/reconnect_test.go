package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestCompactionWhileDisconnected: etcd goes away, keys change and are
// deleted elsewhere and the history is compacted, then etcd comes back where
// dispenser looks for it. Every change and delete must reach the files, with
// exactly one signal.
func TestCompactionWhileDisconnected(t *testing.T) {
	for _, compact := range []bool{true, false} {
		t.Run(fmt.Sprintf("compact=%v", compact), func(t *testing.T) { testChangesWhileDisconnected(t, compact) })
	}
}

// testChangesWhileDisconnected: without compaction the watch resumes and
// etcd sends the missed revisions, in chunks of 1000; that catch-up too
// must be one write and one signal.
func testChangesWhileDisconnected(t *testing.T, compact bool) {
	s := etcdtest.Start(t)
	put(t, s, "/c/a", "1", "/c/b", "1", "/c/gone", "1")
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/c", "-t", dir, "-s", "HUP"}, childArgs(dir, "serve")...)...)
	if got, _ := r.out.next(t, "ready"); got != "ready a=1,b=1,gone=1" {
		t.Fatalf("child started with %q", got)
	}

	port := s.Port()
	s.Stop()
	s.StartOn(etcdtest.FreePort(t)) // dispenser cannot see it here
	elsewhere := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := elsewhere.Put(ctx, "/c/a", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := elsewhere.Delete(ctx, "/c/gone"); err != nil {
		t.Fatal(err)
	}
	// More revisions than etcd sends in one catch-up response (1000).
	for i := range 1500 {
		if _, err := elsewhere.Put(ctx, "/c/many", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := elsewhere.Put(ctx, "/c/new", "1")
	if err != nil {
		t.Fatal(err)
	}
	if compact {
		if _, err := elsewhere.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
	}
	s.Stop()
	began := time.Now()
	s.StartOn(port)

	line, _ := r.out.next(t, "HUP")
	t.Logf("back on port %d: files and signal after %v", port, time.Since(began))
	if want := "HUP a=2,b=1,many=1499,new=1"; line != want {
		t.Fatalf("after reconnect the child saw %q, want %q", line, want)
	}
	c := s.Client(t)
	if _, err := c.Put(ctx, "/c/marker", "m"); err != nil {
		t.Fatal(err)
	}
	line, skipped := r.out.next(t, "HUP")
	if line != "HUP a=2,b=1,many=1499,marker=m,new=1" || len(skipped) != 0 {
		t.Fatalf("next signal %q (skipped %q): want exactly one signal for the reconnect", line, skipped)
	}
}
