package etcdenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines outlive the tests, e.g. an etcd
// client that was never closed. (etcd's testutil.MustTestMainWithLeakDetection
// would do, but its package needs testify, which is not in go.sum.)
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if stacks := leakedGoroutines(10 * time.Second); stacks != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after all tests:\n\n%s\n", stacks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines other than the test
// runner's own, after giving closed clients and servers up to d to wind down.
func leakedGoroutines(d time.Duration) string {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for {
		stacks := otherGoroutines()
		if len(stacks) == 0 {
			return ""
		}
		select {
		case <-tick.C:
		case <-deadline:
			return strings.Join(stacks, "\n\n")
		}
	}
}

func otherGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		_, stack, _ := strings.Cut(g, "\n")
		switch {
		case strings.Contains(stack, "etcdenv.otherGoroutines("),
			strings.Contains(stack, "testing.(*M)."),
			strings.Contains(stack, "testing.tRunner"),
			strings.Contains(stack, "created by os/signal."),
			strings.Contains(stack, "runtime.goexit") && !strings.Contains(stack, "created by"):
			continue
		}
		out = append(out, g)
	}
	return out
}
