package etcha

import (
	"testing"

	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// TestBundlePathRulesAgree checks that the verifier (token) and the
// renderer (pattern) normalise etchaPattern paths the same way, so a JWT
// token accepts never renders differently from what token checked.
func TestBundlePathRulesAgree(t *testing.T) {
	for _, p := range []string{
		"", "/", "main.jsonnet", "/main.jsonnet", "//main.jsonnet", "./main.jsonnet",
		"a/../main.jsonnet", "/a/b/../../main.jsonnet", "../main.jsonnet", "/../../x",
		"lib/x.libsonnet/", "a//b", `a\b`, "a/./b",
	} {
		if got, want := token.PatternPath(p), pattern.NormalPath(p); got != want {
			t.Errorf("token.PatternPath(%q) = %q, pattern.NormalPath = %q", p, got, want)
		}
	}
}
