package etcdproc

import (
	"runtime"
	"strings"
	"time"
)

// LeakedGoroutines waits up to d for goroutines running code of dispenser,
// etcd, gRPC or os/exec to end, and returns the stacks of those that did
// not ("" if none). Call it from TestMain after m.Run: a leftover one is an
// unclosed client or an unwaited process. (etcd's testutil leak check needs
// testify, which go.sum does not have.)
func LeakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		leaked := interesting()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C
	}
}

func interesting() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "etcdproc.interesting(") {
			continue
		}
		for _, pkg := range []string{"dispenser-dev/dispenser/", "go.etcd.io/", "google.golang.org/grpc", "os/exec."} {
			if strings.Contains(g, pkg) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
