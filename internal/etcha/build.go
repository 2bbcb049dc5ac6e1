package etcha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// DefaultBuildOutput is where build writes the JWT when neither the
// command line nor the pattern's buildOutput names a destination.
const DefaultBuildOutput = "etcha.jwt"

// GenerateKeys prints a new key pair as {"privateKey": ..., "publicKey":
// ...} (spec §1.2, §11.8). typ is "" or "ed25519", "ecp256" or "rsa2048".
func (a *App) GenerateKeys(typ string) error {
	priv, pub, err := token.GenerateKeys(typ)
	if err != nil {
		return Usagef("generate-keys: %v; use ed25519, ecp256 or rsa2048", err)
	}
	out, err := json.MarshalIndent(map[string]string{"privateKey": priv.Encode(), "publicKey": pub.String()}, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout(), "%s\n", out)
	return err
}

// BuildOptions are the arguments of `etcha build`.
type BuildOptions struct {
	// Pattern is the entrypoint .jsonnet file.
	Pattern string
	// Dest is the JWT file to write; "" means the pattern's buildOutput,
	// else DefaultBuildOutput.
	Dest string
	// Source names a source whose exec and vars apply; "" for none.
	Source string
}

// Build builds, signs and writes a pattern JWT (spec §3.4):
//
//  1. Parse the signing key, so a bad key fails before anything runs.
//  2. Bundle the entrypoint and its imports (etchaPattern).
//  3. Render it with build vars, recording cached native calls.
//  4. Run the build commands in change mode with exec → source exec →
//     buildExec, collecting buildManifest and runVar_<k> events.
//  5. Make the claims, sign them and write the JWT atomically.
//
// A failing step writes nothing.
func (a *App) Build(ctx context.Context, o BuildOptions) error {
	src, err := a.config().source(o.Source)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(o.Pattern)
	if err != nil {
		return err
	}
	jwt, p, err := a.buildJWT(ctx, o.Pattern, renderRequest{
		sourceName: o.Source, source: src,
		auto: map[string]any{"srcDir": filepath.Dir(abs), "srcPath": abs},
	})
	if err != nil {
		return err
	}
	dest := firstNonEmpty(o.Dest, p.BuildOutput, DefaultBuildOutput)
	if err := writeFileAtomic(dest, []byte(jwt+"\n"), 0o644); err != nil {
		return err
	}
	a.logger().Info("built pattern", "path", dest)
	return nil
}

// buildJWT does Build's steps 1–5 for the pattern file at path (or, for
// a path not ending in .jsonnet, the raw Jsonnet in path) and returns the
// signed JWT and the rendered pattern. r.record is set here.
func (a *App) buildJWT(ctx context.Context, path string, r renderRequest) (string, *pattern.Pattern, error) {
	key, err := a.signingKey() // (1)
	if err != nil {
		return "", nil, err
	}
	b, err := loadBundle(path, false) // (2)
	if err != nil {
		return "", nil, err
	}
	r.record = true
	res, err := a.renderBundle(ctx, b, r) // (3)
	if err != nil {
		return "", nil, err
	}
	p := res.Pattern
	exec, err := a.mergeExec(r.sourceName, r.source, "buildExec", p.BuildExec) // (4)
	if err != nil {
		return "", nil, err
	}
	run := a.runCommands(ctx, p.Build, command.Options{Exec: exec})
	if run.Err != nil {
		return "", nil, fmt.Errorf("build %s: %w; fix the failing build command (no JWT was written)", path, run.Err)
	}
	claims := a.buildClaims(b, res, run.Events) // (5)
	jwt, err := token.Sign(claims, key)
	if err != nil {
		return "", nil, fmt.Errorf("sign %s: %w", path, err)
	}
	return jwt, p, nil
}

func (a *App) buildClaims(b *pattern.Bundle, res *pattern.Result, events []command.Event) *token.Claims {
	p := res.Pattern
	runVars := make(map[string]any, len(p.RunVars))
	for k, v := range p.RunVars {
		runVars[k] = v
	}
	var manifest strings.Builder
	for _, ev := range events {
		switch {
		case ev.Name == "buildManifest":
			manifest.WriteString(ev.Output)
		case strings.HasPrefix(ev.Name, "runVar_") && len(ev.Name) > len("runVar_"):
			runVars[strings.TrimPrefix(ev.Name, "runVar_")] = ev.Output
		}
	}
	now := a.now()
	c := &token.Claims{
		Audience:      p.Audience,
		IssuedAt:      now,
		NotBefore:     now,
		Issuer:        p.Issuer,
		ID:            p.ID,
		Subject:       p.Subject,
		BuildManifest: manifest.String(),
		Pattern:       token.Pattern{Entrypoint: b.Entrypoint, Files: b.Files},
		RunVars:       runVars,
		Version:       a.Version,
		Cache:         res.Cache,
	}
	if p.ExpiresIn > 0 {
		c.ExpiresAt = now.Add(time.Duration(p.ExpiresIn))
	}
	return c
}

// signingKey parses build.signingKey, or the file build.signingKeyPath
// names (a bare file name is searched upward from the working directory,
// trusting only files nobody else can write; see search).
func (a *App) signingKey() (token.PrivateKey, error) {
	bc := a.config().Build
	text, where := bc.SigningKey, "build.signingKey"
	if text == "" && bc.SigningKeyPath != "" {
		p, err := a.keyPath(bc.SigningKeyPath)
		if err != nil {
			return token.PrivateKey{}, fmt.Errorf("read build.signingKeyPath %s: %w; point it at the file holding the private key", bc.SigningKeyPath, err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return token.PrivateKey{}, fmt.Errorf("read build.signingKeyPath: %w; point it at the file holding the private key", err)
		}
		text, where = strings.TrimSpace(string(data)), "build.signingKeyPath "+p
	}
	if text == "" {
		return token.PrivateKey{}, errors.New("no signing key; set build.signingKey or build.signingKeyPath to a privateKey from `etcha generate-keys`")
	}
	k, err := token.ParsePrivateKey(text)
	if err != nil {
		return token.PrivateKey{}, fmt.Errorf("%s: %w; set it to the privateKey printed by `etcha generate-keys`", where, err)
	}
	return k, nil
}

// keyPath returns p, or for a bare file name the trusted file of that
// name found upward from the working directory (see search).
func (a *App) keyPath(p string) (string, error) {
	if !isBareName(p) {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	found, err := newSearch("", a.Env, a.logger()).find(wd, p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no usable file %s in %s or its parents up to your home directory", p, wd)
	}
	return found, err
}

// writeFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename, so readers never see a partial JWT.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".etcha-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
