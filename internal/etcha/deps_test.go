package etcha

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps etcha a composite of leaves: of this module it may
// import only command, pattern and token (never cmd/*, watch, writer or
// supervisor, which belong to dispenser).
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/dispenser-dev/dispenser/"
	allowed := map[string]bool{"internal/etcha": true, "internal/command": true, "internal/pattern": true, "internal/token": true}
	for _, dep := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(dep, module); ok && !allowed[rel] {
			t.Errorf("etcha imports %s; it may import only the leaves command, pattern and token", dep)
		}
	}
}
