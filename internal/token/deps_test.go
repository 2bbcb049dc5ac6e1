package token

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps token a leaf: standard library, golang-jwt and
// expr-lang only, and no other package of this module.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{
		"github.com/dispenser-dev/dispenser/internal/token", // itself
		"github.com/golang-jwt/jwt/v5",
		"github.com/expr-lang/expr",
	}
	for _, dep := range strings.Fields(string(out)) {
		ok := false
		for _, a := range allowed {
			ok = ok || dep == a || strings.HasPrefix(dep, a+"/")
		}
		if !ok {
			t.Errorf("token imports %s; a leaf package may use only the standard library, golang-jwt and expr-lang", dep)
		}
	}
}
