package etcha

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/source"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// EngineOptions adjust the listen engine that NewEngine builds.
type EngineOptions struct {
	// Sources are extra source names beyond those configured under
	// sources (dispenser's pattern keys); a configured source of the same
	// name gives its options.
	Sources []string
	// StateDir overrides run.stateDir when not empty.
	StateDir string
	// NoState keeps every source's pattern in memory only: nothing is
	// saved or restored (as noRestore on every source).
	NoState bool
	// VerifyKeys are appended to run.verifyKeys.
	VerifyKeys token.PublicKeys
	// OnResult is source.Options.OnResult.
	OnResult func(source string, o source.Origin, r source.Result)
}

// NewEngine builds the listen engine of this configuration (spec §4.1,
// §4.2): every configured source, in name order, with its static commands,
// keys, rule and options, rendering verified JWTs with the configured vars
// and exec layers. It restores each source's saved JWT; nothing runs.
func (a *App) NewEngine(ctx context.Context, o EngineOptions) (*source.Engine, error) {
	c := a.config()
	keys, err := parseKeys("run.verifyKeys", c.Run.VerifyKeys)
	if err != nil {
		return nil, err
	}
	keys = append(keys, o.VerifyKeys...)
	names := slices.Sorted(maps.Keys(c.Sources))
	for _, n := range o.Sources {
		if _, ok := c.Sources[n]; !ok {
			names = append(names, n)
		}
	}
	var cfgs []source.Config
	for _, name := range names {
		sc, err := a.sourceConfig(name)
		if err != nil {
			return nil, err
		}
		sc.NoRestore = sc.NoRestore || o.NoState
		cfgs = append(cfgs, sc)
	}
	stateDir := c.Run.StateDir
	if o.StateDir != "" {
		stateDir = o.StateDir
	}
	return source.New(ctx, source.Options{
		StateDir:   stateDir,
		VerifyKeys: keys,
		JWTRule:    c.Run.JWTRule,
		MaxSize:    a.maxJWTSize(),
		Now:        a.Now,
		Renderer:   source.RenderFunc(a.renderSource),
		Environ:    a.Env,
		Logger:     a.logger(),
		OnResult:   o.OnResult,
		Stdout:     a.stdout(),
	}, cfgs)
}

// sourceConfig turns sources.<name> into the engine's source.Config. A
// name that is not configured gets every option off.
func (a *App) sourceConfig(name string) (source.Config, error) {
	src := a.config().Sources[name]
	if src == nil {
		src = &SourceConfig{}
	}
	keys, err := parseKeys("sources."+name+".verifyKeys", src.VerifyKeys)
	if err != nil {
		return source.Config{}, err
	}
	sc := source.Config{
		Name:              name,
		VerifyKeys:        keys,
		JWTRule:           src.JWTRule,
		CheckOnly:         src.CheckOnly,
		NoRemove:          src.NoRemove,
		NoRestore:         src.NoRestore,
		TriggerOnly:       src.TriggerOnly,
		RunMulti:          src.RunMulti,
		PullIgnoreVersion: src.PullIgnoreVersion,
		AllowRollback:     src.AllowRollback,
		EventsSend:        src.EventsSend,
		EventsReceive:     src.EventsReceive,
		WebhookPaths:      src.WebhookPaths,
	}
	if len(src.Commands) > 0 {
		exec, err := a.mergeExec(name, src, "", nil)
		if err != nil {
			return source.Config{}, fmt.Errorf("config sources.%s: %w", name, err)
		}
		sc.Static = &source.Pattern{Run: src.Commands, Exec: exec}
	}
	return sc, nil
}

// renderSource renders the pattern a verified JWT carries for a source,
// from the bundled files only, with the JWT's etchaRunVars and etchaCache,
// the config's vars and the source's (spec §5.3), and returns its run list
// with the effective exec (main exec, source exec, runExec).
func (a *App) renderSource(ctx context.Context, name string, claims *token.Claims, jwt string) (source.Pattern, error) {
	src := a.config().Sources[name]
	if src == nil {
		src = &SourceConfig{}
	}
	b := &pattern.Bundle{Entrypoint: claims.Pattern.Entrypoint, Files: claims.Pattern.Files}
	res, err := a.renderBundle(ctx, b, renderRequest{
		sourceName: name, source: src, runVars: claims.RunVars, cache: claims.Cache,
		auto: map[string]any{"jwt": jwt},
	})
	if err != nil {
		return source.Pattern{}, err
	}
	exec, err := a.mergeExec(name, src, "runExec", res.Pattern.RunExec)
	if err != nil {
		return source.Pattern{}, err
	}
	return source.Pattern{Run: res.Pattern.Run, Exec: exec}, nil
}
