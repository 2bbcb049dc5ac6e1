package fault_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// waitLong bounds every wait in these tests. It is generous on purpose: CI
// is a slow, shared 2-core machine, and a passing test never waits it out.
const waitLong = 60 * time.Second

// childSentinel as os.Args[1] turns the test binary into the child that
// dispenser supervises (see childMain).
const childSentinel = "dispenser-fault-child"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == childSentinel {
		os.Exit(childMain(os.Args[2], os.Args[3:]))
	}
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
