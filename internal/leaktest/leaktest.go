// Package leaktest fails a test binary whose goroutines outlive its tests:
// an etcd client never closed, a watch never cancelled, a child process
// never waited for. It is test support, imported only from _test.go files.
// (etcd's testutil.MustTestMainWithLeakDetection would do the same, but it
// needs testify, which this module does not depend on.)
package leaktest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// watched are the code locations whose goroutines must not outlive the
// tests: this module, the etcd client and server, gRPC, and os/exec (which
// copies a child's output).
var watched = []string{"dispenser-dev/dispenser/", "go.etcd.io/", "google.golang.org/grpc", "os/exec."}

// Main runs the tests and returns the exit code for os.Exit: the tests'
// own, or 1 if they passed but goroutines of watched code are still
// running 10 seconds later (their stacks are printed).
func Main(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if leaked := Leaked(10 * time.Second); leaked != "" {
		fmt.Fprintf(os.Stderr, "goroutines still running after all tests:\n\n%s\n", leaked)
		return 1
	}
	return 0
}

// Leaked waits up to d for goroutines running watched code to end, and
// returns the stacks of those that did not ("" if none).
func Leaked(d time.Duration) string {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		leaked := running()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C
	}
}

func running() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "leaktest.running(") || strings.Contains(g, "testing.(*M).") {
			continue
		}
		for _, w := range watched {
			if strings.Contains(g, w) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
