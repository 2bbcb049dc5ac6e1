package etcha

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// LocalOptions are the arguments of `etcha local`.
type LocalOptions struct {
	// Target is a pattern path (ending in .jsonnet) or raw Jsonnet, which
	// is wrapped as {run: [<Target>]}.
	Target string
	// Remove selects remove mode (-r).
	Remove bool
	// Check selects check mode (-c), as does a source with checkOnly.
	Check bool
	// Source names the source whose exec, vars and checkOnly apply.
	Source string
	// ParentIDs restricts the run to descendants of these group ids (-f).
	ParentIDs []string
}

// Local renders a pattern and runs its run commands here, with no JWT and
// no diff (spec §1.2). It prints a summary. Exit status per spec §11.5:
// an error in a command → 1; in check mode, anything that would change →
// 1; else 0.
func (a *App) Local(ctx context.Context, o LocalOptions) error {
	src, err := a.config().source(o.Source)
	if err != nil {
		return err
	}
	b, err := loadBundle(o.Target, true)
	if err != nil {
		return err
	}
	res, err := a.renderBundle(ctx, b, renderRequest{sourceName: o.Source, source: src})
	if err != nil {
		return err
	}
	mode := command.ModeChange
	switch {
	case o.Check || src.CheckOnly:
		mode = command.ModeCheck
	case o.Remove:
		mode = command.ModeRemove
	}
	p := res.Pattern
	exec, err := a.mergeExec(o.Source, src, "runExec", p.RunExec)
	if err != nil {
		return err
	}
	run := a.runCommands(ctx, p.Run, command.Options{Mode: mode, Exec: exec, ParentIDs: o.ParentIDs})
	a.printSummary(mode, run)
	switch {
	case run.Err != nil:
		return fmt.Errorf("%s: %w", mode, run.Err)
	case mode == command.ModeCheck && len(run.Changed) > 0:
		return fmt.Errorf("check mode: %d command(s) would change: %s; run without check mode to change them", len(run.Changed), strings.Join(run.Changed, ", "))
	}
	return nil
}

func (a *App) printSummary(mode command.Mode, r command.Result) {
	w := a.stdout()
	verb := "Changed"
	if mode == command.ModeCheck {
		verb = "Would change"
	}
	if len(r.Changed) > 0 {
		fmt.Fprintf(w, "%s %d: %s\n", verb, len(r.Changed), strings.Join(r.Changed, ", "))
	}
	if len(r.Removed) > 0 {
		fmt.Fprintf(w, "Removed %d: %s\n", len(r.Removed), strings.Join(r.Removed, ", "))
	}
	if len(r.Changed)+len(r.Removed) == 0 && r.Err == nil {
		fmt.Fprintln(w, "No changes")
	}
}

// jwtShape matches base64url parts joined by dots, starting like a JSON
// object ("eyJ"): the text of a JWT, even a truncated one, which Jsonnet
// never looks like.
var jwtShape = regexp.MustCompile(`^eyJ[A-Za-z0-9_=.-]*$`)

// Render prints the rendered Pattern JSON of target: a JWT file (verified
// first against run.verifyKeys and run.jwtRule), a pattern file, or raw
// Jsonnet (spec §1.2).
func (a *App) Render(ctx context.Context, target string) error {
	out, err := a.render(ctx, target)
	if err != nil {
		return err
	}
	_, err = a.stdout().Write(out.JSON)
	return err
}

func (a *App) render(ctx context.Context, target string) (*pattern.Result, error) {
	if !isPatternPath(target) {
		if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() {
			text, err := a.readJWT(ctx, target)
			if err != nil {
				return nil, err
			}
			if strings.HasSuffix(target, ".jwt") || jwtShape.MatchString(strings.TrimSpace(text)) {
				return a.renderJWT(ctx, text)
			}
			b, err := pattern.Load(target) // a Jsonnet file with another extension
			if err != nil {
				return nil, err
			}
			return a.renderBundle(ctx, b, renderRequest{source: &SourceConfig{}})
		}
		if jwtShape.MatchString(strings.TrimSpace(target)) {
			return a.renderJWT(ctx, target)
		}
	}
	b, err := loadBundle(target, false)
	if err != nil {
		return nil, err
	}
	return a.renderBundle(ctx, b, renderRequest{source: &SourceConfig{}})
}

// renderJWT verifies a JWT and renders its etchaPattern from the bundled
// files only, with its etchaRunVars and etchaCache.
func (a *App) renderJWT(ctx context.Context, text string) (*pattern.Result, error) {
	claims, err := a.verify(text, nil)
	if err != nil {
		return nil, err
	}
	b := &pattern.Bundle{Entrypoint: claims.Pattern.Entrypoint, Files: claims.Pattern.Files}
	return a.renderBundle(ctx, b, renderRequest{
		source: &SourceConfig{}, runVars: claims.RunVars, cache: claims.Cache,
		auto: map[string]any{"jwt": strings.TrimSpace(text)},
	})
}

// verify checks a JWT against run.verifyKeys (+ the source's) and the
// jwtRule of the source, else of run.
func (a *App) verify(text string, src *SourceConfig) (*token.Claims, error) {
	c := a.config()
	keys, err := c.verifyKeys(src)
	if err != nil {
		return nil, err
	}
	rule := c.Run.JWTRule
	if src != nil && src.JWTRule != "" {
		rule = src.JWTRule
	}
	claims, _, err := token.Verify(text, token.VerifyOptions{Keys: keys, JWTRule: rule, Now: a.Now, MaxSize: a.maxJWTSize()})
	if err != nil {
		return nil, fmt.Errorf("jwt is invalid: %w", err)
	}
	return claims, nil
}
