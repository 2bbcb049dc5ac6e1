package pattern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// Options controls one render. The zero value renders with no config, no
// vars, an empty environment and every native function enabled.
type Options struct {
	// Vars are the merged vars (see MergeVars, spec §5.3). getConfig()
	// returns them as .vars, with .vars.test set from Test.
	Vars map[string]any
	// Config is what getConfig() returns (spec §5.2), minus vars/test,
	// which come from Vars and Test. Nil means {}. Config and Vars are
	// copied on the render's first getConfig() call (not at all if there
	// is none); a value JSON cannot encode makes that call fail. The
	// caller must not change them while Render runs.
	Config map[string]any
	// Env is the environment getEnv reads and getCmd runs with: the
	// effective exec environment. Nil means empty; the process
	// environment is never read implicitly.
	Env map[string]string
	// Exec runs getCmd exactly as it runs the pattern's commands
	// (command.Capture, spec §11.14): the script is appended, as one
	// argument, to Exec.Command split into words with shell quoting; an
	// empty Command runs the script's own words without a shell. User,
	// Group, Sudo, WorkDir and Env apply (Env above is added over
	// Exec.Env); a containerImage is refused (not supported yet). Nil
	// means `/bin/sh -c`.
	Exec *command.Exec
	// Cmd, if set, replaces the built-in getCmd runner: it runs script and
	// returns its stdout.
	Cmd func(ctx context.Context, script string) (string, error)
	// Cache holds build-time values (the JWT claim etchaCache). A
	// `cache=true` call, or get(), whose key is present returns the stored
	// value with no side effect (spec §5.1, §11.3).
	Cache map[string]any
	// RecordCache records every `cache=true` call and get() into
	// Result.Cache; set it during build.
	RecordCache bool
	// NoExternal (-d) makes getCmd, getFile and getRecord fail with an
	// error instead of reaching outside. Cached values are still returned.
	NoExternal bool
	// Test is exposed as getConfig().test and getConfig().vars.test.
	Test bool
	// SysInfo, if set, gives getConfig().vars.sysinfo (over any sysinfo in
	// Vars). It is called at most once per render, and only if the pattern
	// calls getConfig(), so a render that does not read the config does
	// not gather sysinfo (pass SysInfo itself, not its result).
	SysInfo func() map[string]any
	// Resolver does getRecord lookups; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger
}

// Result is a rendered pattern.
type Result struct {
	// Pattern is the decoded and validated pattern.
	Pattern *Pattern
	// JSON is the rendered value as go-jsonnet prints it (indented, with a
	// trailing newline); `etcha render` prints it.
	JSON []byte
	// Cache holds the values recorded when Options.RecordCache is set, for
	// the JWT claim etchaCache; it is nil otherwise.
	Cache map[string]any
}

// Render evaluates the bundle's entrypoint with the native functions of
// spec §5.1, then decodes and validates the value as a Pattern (§2.1, §2.4).
// Imports are served from b.Files only: the disk is never read, and an
// import that is not in the bundle is an error. Errors are one line and,
// for Jsonnet errors, start with file:line:col. Nothing is executed
// except what native functions do (getCmd). Render does not modify b and
// may be called concurrently; ctx bounds getCmd, getFile and getRecord
// (go-jsonnet evaluation itself cannot be interrupted).
func (b *Bundle) Render(ctx context.Context, opts Options) (*Result, error) {
	out, r, err := b.evaluate(ctx, opts, false)
	if err != nil {
		return nil, err
	}
	p, err := decodeCached(out)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", b.Entrypoint, err)
	}
	return &Result{Pattern: p, JSON: []byte(out), Cache: r.cacheOut}, nil
}

// Evaluate evaluates the bundle's entrypoint like Render but does not
// decode or validate the value; it returns the JSON text. A .libsonnet
// entrypoint may be a function or hold functions: they are evaluated to
// null instead of failing, so `etcha lint` can check that libraries
// import and evaluate.
func (b *Bundle) Evaluate(ctx context.Context, opts Options) ([]byte, error) {
	library := b != nil && strings.HasSuffix(b.Entrypoint, ".libsonnet")
	out, _, err := b.evaluate(ctx, opts, library)
	if err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// stripFunctions evaluates the imported library with every function value
// replaced by null.
const stripFunctions = `local strip(v) =
  if std.isFunction(v) then null
  else if std.isObject(v) then { [k]: strip(v[k]) for k in std.objectFields(v) }
  else if std.isArray(v) then [strip(x) for x in v]
  else v;
strip(import %q)
`

func (b *Bundle) evaluate(ctx context.Context, opts Options, library bool) (string, *renderer, error) {
	l, err := bundles.lease(b)
	if err != nil {
		return "", nil, err
	}
	defer l.release()
	r, err := newRenderer(ctx, opts, l.imp, b.Root, l.entry)
	if err != nil {
		return "", nil, err
	}
	vm := l.bind(r)
	var out string
	if library {
		out, err = vm.EvaluateAnonymousSnippet(l.entry, fmt.Sprintf(stripFunctions, l.entry))
	} else {
		out, err = vm.EvaluateFile(l.entry)
	}
	if err != nil {
		return "", nil, err
	}
	return out, r, nil
}

// renderer is the state of one render, shared by the native functions and
// by nested render() calls. go-jsonnet calls natives from the evaluating
// goroutine only, so it needs no lock.
type renderer struct {
	ctx      context.Context
	opts     Options
	importer jsonnet.Importer
	config   map[string]any // getConfig() result; nil until its first call
	path     string         // getPath() result
	log      *slog.Logger
	memo     map[string]memoEntry // getFile/getRecord within this render
	cacheOut map[string]any
	depth    int // nesting of render()
}

type memoEntry struct {
	val any
	err error
}

func newRenderer(ctx context.Context, opts Options, imp jsonnet.Importer, root, entry string) (*renderer, error) {
	var err error
	if opts.Cache, err = jsonCopy(opts.Cache); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	r := &renderer{
		ctx:      ctx,
		opts:     opts,
		importer: imp,
		log:      opts.Logger,
		memo:     map[string]memoEntry{},
	}
	if root != "" {
		r.path = filepath.Join(root, filepath.FromSlash(path.Dir(entry)))
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if opts.RecordCache {
		r.cacheOut = map[string]any{}
	}
	return r, nil
}

// getConfig returns getConfig()'s value, built on the first call of the
// render: most patterns never call it, and copying the config and vars
// (sysinfo included) is a good part of a small render.
func (r *renderer) getConfig([]any) (any, error) {
	if r.config == nil {
		c, err := configValue(r.opts)
		if err != nil {
			return nil, err
		}
		r.config = c
	}
	return r.config, nil
}

// configValue builds getConfig()'s value as plain JSON types.
func configValue(opts Options) (map[string]any, error) {
	config, err := jsonCopy(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	vars, err := jsonCopy(opts.Vars)
	if err != nil {
		return nil, fmt.Errorf("vars: %w", err)
	}
	if opts.SysInfo != nil {
		if vars["sysinfo"], err = jsonValue(opts.SysInfo()); err != nil {
			return nil, fmt.Errorf("sysinfo: %w", err)
		}
	}
	vars["test"] = opts.Test
	config["vars"] = vars
	config["test"] = opts.Test
	return config, nil
}

// jsonCopy deep-copies m into the types encoding/json produces, which are
// the only ones go-jsonnet accepts from native functions. Nil is an empty
// map.
func jsonCopy(m map[string]any) (map[string]any, error) {
	if m == nil {
		return map[string]any{}, nil
	}
	v, err := jsonValue(m)
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// jsonValue deep-copies v into the types encoding/json decodes to: nil,
// bool, float64, string, []any and map[string]any. Values already of those
// types (with valid UTF-8 and finite numbers) are copied as they are;
// anything else is converted by a round trip through encoding/json, which
// fails as json.Marshal does.
func jsonValue(v any) (any, error) {
	switch t := v.(type) {
	case nil, bool:
		return t, nil
	case string:
		if utf8.ValidString(t) {
			return t, nil
		}
	case float64:
		if !math.IsNaN(t) && !math.IsInf(t, 0) {
			return t, nil
		}
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			if !utf8.ValidString(k) {
				return viaJSON(t)
			}
			c, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	}
	return viaJSON(v)
}

// viaJSON converts v with a round trip through encoding/json.
func viaJSON(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// lineFormatter prints go-jsonnet errors on one line, location first:
// "/p.jsonnet:3:7-12: Unknown variable: x".
type lineFormatter struct{}

var _ jsonnet.ErrorFormatter = lineFormatter{}

func (lineFormatter) Format(err error) string {
	var rt jsonnet.RuntimeError
	if errors.As(err, &rt) {
		// Frames run outermost first; the last one with a source position
		// is where the error was raised (the native call, the error
		// expression, the import).
		msg := rt.Msg
		for i := len(rt.StackTrace) - 1; i >= 0; i-- {
			if loc := rt.StackTrace[i].Loc; loc.WithCode() {
				msg = located(loc.String(), msg)
				break
			}
		}
		return oneLine(msg)
	}
	if se, ok := err.(interface{ Loc() ast.LocationRange }); ok {
		loc := se.Loc()
		if loc.IsSet() {
			prefix := loc.String()
			return oneLine(prefix + ": " + strings.TrimSpace(strings.TrimPrefix(err.Error(), prefix)))
		}
	}
	return oneLine(err.Error())
}

// staticLoc matches the "file:line:col " prefix go-jsonnet gives a parse
// error of an imported file, which then surfaces as a runtime error at the
// import expression.
// It is compiled on first use, not at program start.
var staticLoc = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(\S+:(?:\d+:\d+(?:-\d+)?|\(\d+:\d+\)-\(\d+:\d+\))) `)
})

// located puts the most precise location first: the imported file's own
// position when msg carries one, else loc.
func located(loc, msg string) string {
	if m := staticLoc().FindStringSubmatch(msg); m != nil {
		return m[1] + ": " + msg[len(m[0]):] + " (imported at " + loc + ")"
	}
	return loc + ": " + msg
}

func (lineFormatter) SetMaxStackTraceSize(int)                 {}
func (lineFormatter) SetColorFormatter(jsonnet.ColorFormatter) {}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
