package etcha

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkVerifyRender measures what `etcha render <jwt>` does with a
// 100-command pattern: size check, signature and claims verification,
// then rendering the bundle with vars and validating the Command list.
// "sysinfo" includes gathering sysinfo, as the CLI does on every render.
func BenchmarkVerifyRender(b *testing.B) {
	var cmds []string
	for i := range 100 {
		cmds = append(cmds, fmt.Sprintf(`    {id: 'command %[1]d', check: 'test -f /tmp/f%[1]d', change: 'touch /tmp/f%[1]d', remove: 'rm /tmp/f%[1]d', onChange: ['etcha:changed']},`, i))
	}
	dir := b.TempDir()
	p := writeFile(b, dir, "p.jsonnet", "{\n  run: [\n"+strings.Join(cmds, "\n")+"\n  ],\n}\n")
	a, _ := newApp(b, baseConfig)
	ctx := context.Background()
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: p, Dest: jwt}); err != nil {
		b.Fatal(err)
	}
	text := readFile(b, jwt)
	for _, bc := range []struct {
		name    string
		sysinfo bool
	}{{"fixed-sysinfo", false}, {"sysinfo", true}} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.sysinfo {
				a.SysInfo = nil
			}
			for b.Loop() {
				res, err := a.renderJWT(ctx, text)
				if err != nil {
					b.Fatal(err)
				}
				if got := len(res.Pattern.Run); got != 100 {
					b.Fatalf("rendered %d commands, want 100", got)
				}
			}
		})
	}
}
