package pattern

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// commandsPattern is a pattern of n commands like the bench's `etcha
// render` case (bench/etcha.go), with a comment that makes its text, and so
// its JWT, unique per tag.
func commandsPattern(n int, tag string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "// %s\n{\n  run: [\n", tag)
	for i := range n {
		fmt.Fprintf(&b, "    {id: 'command %[1]d', check: 'test -f /tmp/f%[1]d', change: 'touch /tmp/f%[1]d', remove: 'rm /tmp/f%[1]d'},\n", i)
	}
	b.WriteString("  ],\n}\n")
	return b.String()
}

// signedPattern signs a JWT carrying src as its only file, the way etcha
// build does (iat = nbf = now, exp an hour later).
func signedPattern(t testing.TB, key token.PrivateKey, src string) string {
	t.Helper()
	now := time.Now()
	c := &token.Claims{
		IssuedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Hour),
		Pattern: token.Pattern{Entrypoint: "/p.jsonnet", Files: map[string]string{"/p.jsonnet": src}},
		Version: "bench",
	}
	s, err := token.Sign(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// verifyRender is what `etcha render <jwt>` does after loading its config:
// verify the JWT, then render its bundle with its runVars and cache, the
// automatic vars (sysinfo passed in: the caller gathers it once) and the
// exec. It returns the rendered JSON.
func verifyRender(ctx context.Context, jwt string, keys token.PublicKeys, sysinfo map[string]any) ([]byte, error) {
	claims, _, err := token.Verify(jwt, token.VerifyOptions{Keys: keys})
	if err != nil {
		return nil, err
	}
	b := &Bundle{Entrypoint: claims.Pattern.Entrypoint, Files: claims.Pattern.Files}
	exec := command.Exec{Command: "/bin/sh -c"}
	res, err := b.Render(ctx, Options{
		Vars: MergeVars(claims.RunVars, nil, nil, nil,
			map[string]any{"source": "", "sysinfo": sysinfo, "test": false, "jwt": jwt}),
		Config: map[string]any{"exec": map[string]any{"command": exec.Command}},
		Env:    map[string]string{},
		Exec:   &exec,
		Cache:  claims.Cache,
	})
	if err != nil {
		return nil, err
	}
	return res.JSON, nil
}

// BenchmarkVerifyRender measures verify + render of a signed 100-command
// JWT in process (issue 10 item 5). cold: every iteration has a JWT and
// pattern text never seen before, so no cache can help; warm: the same
// JWT every iteration, as a source re-running its pattern on each tick.
func BenchmarkVerifyRender(b *testing.B) {
	priv, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		b.Fatal(err)
	}
	keys := token.PublicKeys{pub}
	sysinfo := SysInfo()
	ctx := context.Background()
	b.Run("cold", func(b *testing.B) {
		jwts := make([]string, b.N)
		for i := range jwts {
			jwts[i] = signedPattern(b, priv, commandsPattern(100, fmt.Sprintf("cold %d %d", i, time.Now().UnixNano())))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := verifyRender(ctx, jwts[i], keys, sysinfo); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		jwt := signedPattern(b, priv, commandsPattern(100, "warm"))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := verifyRender(ctx, jwt, keys, sysinfo); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSysInfo measures gathering the sysinfo var, which every render
// from the etcha command does and which must not be cached.
func BenchmarkSysInfo(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		SysInfo()
	}
}
