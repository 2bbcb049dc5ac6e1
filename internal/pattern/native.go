package pattern

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strings"

	"github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
)

// maxRenderDepth bounds nested render() calls.
const maxRenderDepth = 8

// host is what the native functions of one VM call: the renderer of the
// render in progress. A cached VM (see vmCache) keeps its natives between
// renders and gets the next render's renderer here; between renders r is
// nil, so an idle VM holds nothing of a finished render.
type host struct{ r *renderer }

// natives lists the native functions of spec §5.1, calling h.r. go-jsonnet
// requires every parameter at the call site; the built-in library
// NativeLibPath ('etcha/native.libsonnet') has wrappers that supply the
// defaults (fallback and default null, cache false, prefix empty).
func natives(h *host) []*jsonnet.NativeFunction {
	call := func(f func(*renderer, []any) (any, error)) func([]any) (any, error) {
		return func(args []any) (any, error) { return f(h.r, args) }
	}
	return []*jsonnet.NativeFunction{
		{Name: "getArch", Func: func([]any) (any, error) { return runtime.GOARCH, nil }},
		{Name: "getOS", Func: func([]any) (any, error) { return runtime.GOOS, nil }},
		{Name: "getConfig", Func: call((*renderer).getConfig)},
		{Name: "getPath", Func: func([]any) (any, error) { return h.r.path, nil }},
		{Name: "getEnv", Params: ast.Identifiers{"key", "fallback", "cache"}, Func: call((*renderer).getEnv)},
		{Name: "getCmd", Params: ast.Identifiers{"command", "fallback", "cache"}, Func: call((*renderer).getCmd)},
		{Name: "getFile", Params: ast.Identifiers{"path", "fallback", "cache"}, Func: call((*renderer).getFile)},
		{Name: "getRecord", Params: ast.Identifiers{"type", "name", "fallback", "cache"}, Func: call((*renderer).getRecord)},
		{Name: "get", Params: ast.Identifiers{"object", "filter", "default", "prefix"}, Func: call((*renderer).get)},
		{Name: "randStr", Params: ast.Identifiers{"length"}, Func: randStr},
		// randString is the older name of randStr (spec §9 #17).
		{Name: "randString", Params: ast.Identifiers{"length"}, Func: randStr},
		{Name: "regexMatch", Params: ast.Identifiers{"regex", "string"}, Func: regexMatch},
		{Name: "render", Params: ast.Identifiers{"string"}, Func: call((*renderer).render)},
	}
}

// cached wraps a native function with the build→run cache (spec §11.3):
// name is the function name, key the arguments other than fallback and
// cache, useCache the call's cache argument. A hit in Options.Cache
// returns the stored value and skips eval entirely (no side effect).
func (r *renderer) cached(name string, key []any, useCache bool, eval func() (any, error)) (any, error) {
	if !useCache {
		return eval()
	}
	k, err := cacheKey(name, key)
	if err != nil {
		return nil, err
	}
	if v, ok := r.opts.Cache[k]; ok {
		r.log.Debug("cached value used", "key", k)
		return v, nil
	}
	v, err := eval()
	if err != nil {
		return nil, err
	}
	if r.cacheOut != nil {
		r.cacheOut[k] = v
	}
	return v, nil
}

// cacheKey is the function name followed by the canonical JSON of args:
// encoding/json sorts object keys, and HTML escaping is off.
func cacheKey(name string, args []any) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(args); err != nil {
		return "", fmt.Errorf("%s: cache key: %w", name, err)
	}
	return name + strings.TrimSuffix(b.String(), "\n"), nil
}

// withFallback returns fallback when eval fails and fallback is not null.
func withFallback(fallback any, eval func() (any, error)) func() (any, error) {
	return func() (any, error) {
		v, err := eval()
		if err != nil && fallback != nil {
			return fallback, nil
		}
		return v, err
	}
}

func (r *renderer) getEnv(args []any) (any, error) {
	key, err := argString("getEnv", "key", args[0])
	if err != nil {
		return nil, err
	}
	useCache, err := argBool("getEnv", "cache", args[2])
	if err != nil {
		return nil, err
	}
	return r.cached("getEnv", args[:1], useCache, func() (any, error) {
		if v, ok := r.opts.Env[key]; ok {
			return v, nil
		}
		if args[1] != nil {
			return args[1], nil
		}
		return "", nil
	})
}

// external refuses functions that reach outside under -d.
func (r *renderer) external(name string) error {
	if r.opts.NoExternal {
		return fmt.Errorf("%s is disabled (-d disables getCmd, getFile and getRecord); remove -d or the call", name)
	}
	return nil
}

func (r *renderer) getCmd(args []any) (any, error) {
	script, err := argString("getCmd", "command", args[0])
	if err != nil {
		return nil, err
	}
	useCache, err := argBool("getCmd", "cache", args[2])
	if err != nil {
		return nil, err
	}
	return r.cached("getCmd", args[:1], useCache, func() (any, error) {
		if err := r.external("getCmd"); err != nil {
			return nil, err
		}
		if e := r.opts.Exec; e != nil && e.ContainerImage != "" { // a setting to fix, not a failure to fall back from
			return nil, fmt.Errorf("getCmd %q: exec.containerImage %q: container execs are not supported yet; remove containerImage from the exec settings", script, e.ContainerImage)
		}
		return withFallback(args[1], func() (any, error) { return r.runCmd(script) })()
	})
}

func (r *renderer) getFile(args []any) (any, error) {
	p, err := argString("getFile", "path", args[0])
	if err != nil {
		return nil, err
	}
	useCache, err := argBool("getFile", "cache", args[2])
	if err != nil {
		return nil, err
	}
	return r.cached("getFile", args[:1], useCache, func() (any, error) {
		if err := r.external("getFile"); err != nil {
			return nil, err
		}
		return withFallback(args[1], func() (any, error) {
			return r.memoised("getFile "+p, func() (any, error) { return r.fetch(p) })
		})()
	})
}

func (r *renderer) getRecord(args []any) (any, error) {
	typ, err := argString("getRecord", "type", args[0])
	if err != nil {
		return nil, err
	}
	name, err := argString("getRecord", "name", args[1])
	if err != nil {
		return nil, err
	}
	useCache, err := argBool("getRecord", "cache", args[3])
	if err != nil {
		return nil, err
	}
	typ = strings.ToLower(typ)
	if !validRecordType(typ) {
		return nil, fmt.Errorf("getRecord: type %q is not one of a, aaaa, cname, txt", args[0])
	}
	return r.cached("getRecord", args[:2], useCache, func() (any, error) {
		if err := r.external("getRecord"); err != nil {
			return nil, err
		}
		return withFallback(args[2], func() (any, error) {
			return r.memoised("getRecord "+typ+" "+name, func() (any, error) { return r.lookup(typ, name) })
		})()
	})
}

// memoised returns the result of an earlier identical call in this render.
func (r *renderer) memoised(key string, eval func() (any, error)) (any, error) {
	if e, ok := r.memo[key]; ok {
		return e.val, e.err
	}
	v, err := eval()
	r.memo[key] = memoEntry{val: v, err: err}
	return v, err
}

// get evaluates a jq-style path on object (spec §5.1); the result, or
// default when it is null or missing, is cached under prefix+filter.
func (r *renderer) get(args []any) (any, error) {
	filter, err := argString("get", "filter", args[1])
	if err != nil {
		return nil, err
	}
	prefix := ""
	if args[3] != nil {
		if prefix, err = argString("get", "prefix", args[3]); err != nil {
			return nil, err
		}
	}
	steps, err := parseFilter(filter)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	key := prefix + filter
	if v, ok := r.opts.Cache[key]; ok {
		return v, nil
	}
	v := walk(args[0], steps)
	if v == nil {
		v = args[2]
	}
	if r.cacheOut != nil {
		r.cacheOut[key] = v
	}
	return v, nil
}

// render evaluates a string as Jsonnet with the same natives, importer and
// caches, and returns its value.
func (r *renderer) render(args []any) (any, error) {
	src, err := argString("render", "string", args[0])
	if err != nil {
		return nil, err
	}
	if r.depth >= maxRenderDepth {
		return nil, fmt.Errorf("render: nested more than %d deep", maxRenderDepth)
	}
	r.depth++
	defer func() { r.depth-- }()
	out, err := newVM(r.importer, &host{r: r}).EvaluateAnonymousSnippet("render", src)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	return v, nil
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randStr(args []any) (any, error) {
	n, ok := args[0].(float64)
	if !ok || n < 0 || n > 4096 || n != float64(int(n)) {
		return nil, fmt.Errorf("randStr: length must be an integer from 0 to 4096, got %v", args[0])
	}
	out := make([]byte, 0, int(n))
	buf := make([]byte, 64)
	for len(out) < int(n) {
		if _, err := rand.Read(buf); err != nil {
			return nil, fmt.Errorf("randStr: %w", err)
		}
		for _, c := range buf {
			// 248 = 4*62: reject the rest so every character is equally likely.
			if c < 248 && len(out) < int(n) {
				out = append(out, alnum[int(c)%len(alnum)])
			}
		}
	}
	return string(out), nil
}

func regexMatch(args []any) (any, error) {
	expr, err := argString("regexMatch", "regex", args[0])
	if err != nil {
		return nil, err
	}
	s, err := argString("regexMatch", "string", args[1])
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("regexMatch: %w", err)
	}
	return re.MatchString(s), nil
}

func argString(fn, name string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: %s must be a string, got %s", fn, name, typeName(v))
	}
	return s, nil
}

// argBool reads a cache flag; null means false.
func argBool(fn, name string, v any) (bool, error) {
	switch v := v.(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	}
	return false, fmt.Errorf("%s: %s must be a boolean, got %s", fn, name, typeName(v))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
