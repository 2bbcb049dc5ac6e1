package etcdenv

import (
	"os"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// TestMain fails the run if goroutines outlive the tests, e.g. an etcd
// client that was never closed.
func TestMain(m *testing.M) { os.Exit(leaktest.Main(m)) }
