package etcdproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds caches the binaries built by this test process. It is the
// package's only global: a binary is expensive to build and the same for
// every test of the process, so it outlives any one test; call RemoveBuilds
// from TestMain to delete the files.
var builds struct {
	mu   sync.Mutex
	dir  string            // temporary directory holding every binary
	done map[string]string // package → binary path
	errs map[string]error  // package → build error, so later tests fail fast
}

// Build returns the path of an etcd server binary built from this module's
// ./internal/etcdproc/etcdserver, building it on the first call in this
// process. It fails the test if the build fails.
func Build(t testing.TB) string {
	t.Helper()
	return BuildPackage(t, "./internal/etcdproc/etcdserver")
}

// BuildPackage builds the main package pkg (a path relative to the module
// root, e.g. "./cmd/dispenser") with `go build`, once per process, and
// returns the binary's path. The binary is built without -race, whatever
// the test binary was built with. It fails the test if the build fails.
func BuildPackage(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if path, ok := builds.done[pkg]; ok {
		return path
	}
	if err, ok := builds.errs[pkg]; ok {
		t.Fatalf("etcdproc: %v", err)
	}
	path, err := build(pkg)
	if err != nil {
		if builds.errs == nil {
			builds.errs = map[string]error{}
		}
		builds.errs[pkg] = err
		t.Fatalf("etcdproc: %v", err)
	}
	if builds.done == nil {
		builds.done = map[string]string{}
	}
	builds.done[pkg] = path
	return path
}

// RemoveBuilds deletes every binary built so far. Call it from TestMain
// after m.Run; a later Build builds again.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	builds.dir, builds.done, builds.errs = "", nil, nil
}

// build runs go build for pkg from the module root. builds.mu is held.
func build(pkg string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if builds.dir == "" {
		if builds.dir, err = os.MkdirTemp("", "etcdproc-bin-"); err != nil {
			return "", fmt.Errorf("directory for binaries: %w", err)
		}
	}
	out := filepath.Join(builds.dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module; run the tests from the dispenser module")
	}
	return filepath.Dir(gomod), nil
}
