package etcha

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// App runs etcha commands with one configuration. The zero value of every
// field but Config is usable.
type App struct {
	// Config is the loaded configuration; nil means empty.
	Config *Config
	// Env is the process environment ("k=v"), used when an exec sets
	// envInherit (by commands, getEnv and getCmd). Nil means empty: the
	// real process environment is never read directly.
	Env []string
	// Stdout receives command output (JSON, summaries); nil discards it.
	Stdout io.Writer
	// Logger receives per-command logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock for iat/nbf/exp; nil means time.Now.
	Now func() time.Time
	// Version is written to etchaVersion and printed by `version`.
	Version string
	// NoExternal is -d: getCmd, getFile and getRecord fail when rendering.
	NoExternal bool
	// SysInfo returns the sysinfo var; nil means pattern.SysInfo.
	SysInfo func() map[string]any
	// HTTPTimeout bounds each http(s) fetch of a JWT (jwt, render,
	// compare), connection to end of body; 0 means DefaultHTTPTimeout.
	HTTPTimeout time.Duration
}

// DefaultHTTPTimeout bounds a JWT fetch when App.HTTPTimeout is 0.
const DefaultHTTPTimeout = 10 * time.Second

// httpClient returns the client for JWT fetches: never one without a
// timeout, so an unresponsive server cannot hang etcha.
func (a *App) httpClient() *http.Client {
	t := a.HTTPTimeout
	if t <= 0 {
		t = DefaultHTTPTimeout
	}
	return &http.Client{Timeout: t}
}

func (a *App) config() *Config {
	if a.Config == nil {
		return &Config{}
	}
	return a.Config
}

func (a *App) stdout() io.Writer {
	if a.Stdout == nil {
		return io.Discard
	}
	return a.Stdout
}

func (a *App) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *App) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

func (a *App) sysinfo() map[string]any {
	if a.SysInfo == nil {
		return pattern.SysInfo()
	}
	return a.SysInfo()
}

func (a *App) maxJWTSize() int {
	if n := a.config().Run.MaxJWTSize; n > 0 {
		return n
	}
	return token.DefaultMaxSize
}

// mergeExec returns the effective exec of the chain exec → sources.<name>.exec
// → the pattern's runExec or buildExec (patternName), logging ignored layers
// by name. An ignored layer that asks for a container is an error.
func (a *App) mergeExec(srcName string, src *SourceConfig, patternName string, patternExec *command.Exec) (command.Exec, error) {
	srcLayer := command.Layer{Name: "sources." + srcName + ".exec"}
	if src != nil {
		srcLayer.Exec = src.Exec
	}
	e, warnings, err := command.MergeExec(command.Layer{Name: "exec", Exec: a.config().Exec}, srcLayer,
		command.Layer{Name: patternName, Exec: patternExec})
	if err != nil {
		return e, err // it names the layers
	}
	for _, w := range warnings {
		a.logger().Warn(w)
	}
	return e, nil
}

// execEnv is the environment getEnv reads and getCmd runs with: the
// process environment if envInherit, overlaid with exec.env.
func (a *App) execEnv(e command.Exec) map[string]string {
	env := map[string]string{}
	if e.EnvInherit {
		env = envMap(a.Env)
	}
	for k, v := range e.Env {
		env[k] = v
	}
	return env
}

// renderRequest describes one render of a pattern bundle.
type renderRequest struct {
	sourceName string
	source     *SourceConfig
	runVars    map[string]any // etchaRunVars, lowest precedence
	targetVars map[string]any // targets.<t>.vars (push only)
	auto       map[string]any // extra automatic vars (srcDir, jwt, ...)
	cache      map[string]any
	record     bool
	test       bool
}

// renderOptions builds the pattern.Options for r, with vars merged per
// spec §5.3.
func (a *App) renderOptions(r renderRequest) (pattern.Options, error) {
	c := a.config()
	// sysinfo is not among the vars: pattern gathers it (SysInfo) only
	// when the pattern calls getConfig(), over any sysinfo in Vars.
	auto := map[string]any{"source": r.sourceName, "test": r.test}
	for k, v := range r.auto {
		auto[k] = v
	}
	e, err := a.mergeExec(r.sourceName, r.source, "", nil)
	if err != nil {
		return pattern.Options{}, err
	}
	return pattern.Options{
		Vars:        pattern.MergeVars(r.runVars, c.Vars, r.source.Vars, r.targetVars, auto),
		Config:      c.getConfig(e),
		Env:         a.execEnv(e),
		Exec:        &e,
		SysInfo:     a.sysinfo,
		Cache:       r.cache,
		RecordCache: r.record,
		NoExternal:  a.NoExternal,
		Test:        r.test,
		Logger:      a.logger(),
	}, nil
}

// renderBundle renders b with the options of r.
func (a *App) renderBundle(ctx context.Context, b *pattern.Bundle, r renderRequest) (*pattern.Result, error) {
	opts, err := a.renderOptions(r)
	if err != nil {
		return nil, err
	}
	return b.Render(ctx, opts)
}

// isPatternPath reports whether arg names a pattern file rather than raw
// Jsonnet (spec §1.2: a path ends in .jsonnet).
func isPatternPath(arg string) bool {
	return strings.HasSuffix(arg, ".jsonnet") || strings.HasSuffix(arg, ".libsonnet")
}

// loadBundle loads a pattern file, or raw Jsonnet (wrapped as {run: [...]}
// when wrap is set).
func loadBundle(arg string, wrap bool) (*pattern.Bundle, error) {
	if isPatternPath(arg) {
		return pattern.Load(arg)
	}
	if wrap {
		arg = pattern.WrapRun(arg)
	}
	return pattern.FromJsonnet(arg)
}

// runCommands runs cmds, inheriting App.Env where an exec sets envInherit,
// and applies the internal effect of the stdout event (spec §4.6): its
// output is printed.
func (a *App) runCommands(ctx context.Context, cmds command.Commands, opts command.Options) command.Result {
	opts.Logger = a.logger()
	opts.Environ = a.Env
	res := cmds.Run(ctx, opts)
	for _, ev := range res.Events {
		if ev.Name == "stdout" {
			fmt.Fprintln(a.stdout(), ev.Output)
		}
	}
	return res
}

// readJWT reads a JWT from a file or an http(s) URL, refusing more than
// the configured maximum size.
func (a *App) readJWT(ctx context.Context, path string) (string, error) {
	limit := a.maxJWTSize()
	var r io.Reader
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		if err != nil {
			return "", fmt.Errorf("read jwt %s: %w", path, err)
		}
		resp, err := a.httpClient().Do(req)
		if err != nil {
			return "", fmt.Errorf("read jwt %s: %w; check the URL and that the server answers", path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("read jwt %s: HTTP status %s; check the URL", path, resp.Status)
		}
		r = resp.Body
	} else {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("read jwt: %w; check the path", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return "", fmt.Errorf("read jwt %s: %w", path, err)
	}
	if len(b) > limit {
		return "", fmt.Errorf("jwt %s is larger than %d bytes; raise run.maxJWTSize if it is genuine", path, limit)
	}
	return string(b), nil
}
