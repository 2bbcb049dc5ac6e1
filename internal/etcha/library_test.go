package etcha

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// TestNativeLibRoundTrip builds a pattern that imports the built-in
// 'etcha/native.libsonnet', checks the JWT does not carry it, and renders
// the JWT.
func TestNativeLibRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.jsonnet", "local n = import 'etcha/native.libsonnet';\n{run: [{id: n.getEnv('NOPE', 'from-lib'), change: n.getCmd('echo true', cache=true)}]}\n")
	a, out := newApp(t, baseConfig)
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(context.Background(), BuildOptions{Pattern: p, Dest: jwt}); err != nil {
		t.Fatal(err)
	}
	c, err := token.Parse(readFile(t, jwt), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pattern.Files) != 1 {
		t.Fatalf("bundle files = %v, want only the pattern", c.Pattern.Files)
	}
	if err := a.Render(context.Background(), jwt); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"id": "from-lib"`) || !strings.Contains(out.String(), `"change": "true"`) {
		t.Fatalf("render output %s", out)
	}
}
