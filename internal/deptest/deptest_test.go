// Package deptest checks that imports between this module's packages point
// one way: mains → feature packages → leaves, and test-only packages are
// imported only from tests.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/dispenser-dev/dispenser/"

// allowed lists, for each package, the module packages its non-test code
// may import. A package not listed may import none.
var allowed = map[string][]string{
	"internal/pattern": {"internal/command"},
	"internal/source":  {"internal/command", "internal/token"},
	"internal/pull":    {"internal/watch"},
	"internal/etcha": {"internal/pattern", "internal/command", "internal/token", "internal/source",
		"internal/pull", "internal/listen", "internal/etcdenv", "internal/metrics"},
	"internal/daemon": {"internal/etcha", "internal/source", "internal/token", "internal/watch",
		"internal/writer", "internal/supervisor", "internal/metrics", "internal/command"},
	"cmd/dispenser": {"internal/daemon", "internal/etcha", "internal/etcdenv", "internal/writer",
		"internal/supervisor", "internal/token", "internal/metrics", "internal/devetcd", "internal/version"},
	"cmd/etcha": {"internal/etcha", "internal/pattern", "internal/command", "internal/token", "internal/version"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		seen++
		ok := map[string]bool{}
		for _, a := range allowed[pkg] {
			ok[a] = true
		}
		for _, imp := range fields[1:] {
			dep, internal := strings.CutPrefix(imp, module)
			if !internal || ok[dep] {
				continue
			}
			switch {
			case strings.HasPrefix(dep, "cmd/"):
				t.Errorf("%s imports %s: nothing may import a main package", pkg, dep)
			case dep == "internal/etcdtest" || dep == "internal/leaktest" || strings.HasPrefix(dep, "internal/etcdproc"):
				t.Errorf("%s imports %s outside tests: it is test support only", pkg, dep)
			default:
				t.Errorf("%s imports %s: not in its allowed list; leaves import no module package", pkg, dep)
			}
		}
	}
	if seen < 8 {
		t.Fatalf("go list saw only %d packages; the check would be vacuous", seen)
	}
}
