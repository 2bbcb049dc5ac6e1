package deploy_test

import (
	"fmt"
	"os"
	"testing"
	"time"

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
