package pattern

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestNativeLibDefaults checks the built-in wrappers supply the defaults
// of spec §5.1 and pass explicit arguments through.
func TestNativeLibDefaults(t *testing.T) {
	const lib = "local n = import 'etcha/native.libsonnet'; "
	env := map[string]string{"FOO": "bar"}
	runNativeCases(t, []nativeCase{
		{name: "getEnv default fallback", src: lib + "n.getEnv('NOPE')", opts: Options{Env: env}, want: `""`},
		{name: "getEnv set", src: lib + "n.getEnv('FOO')", opts: Options{Env: env}, want: `"bar"`},
		{name: "getEnv fallback", src: lib + "n.getEnv('NOPE', 'fb')", opts: Options{Env: env}, want: `"fb"`},
		{name: "getCmd", src: lib + "n.getCmd('echo hi')", want: `"hi"`},
		{name: "getCmd fallback by name", src: lib + "n.getCmd('exit 3', fallback='fb')", want: `"fb"`},
		{name: "getCmd cache recorded", src: lib + "n.getCmd('echo c', cache=true)", opts: Options{Cache: map[string]any{`getCmd["echo c"]`: "cached"}}, want: `"cached"`},
		{name: "getFile fallback", src: lib + "n.getFile('/nonexistent/x', 'fb')", want: `"fb"`},
		{name: "get defaults", src: lib + "n.get({a: {b: 1}}, '.a.b')", want: "1"},
		{name: "get default", src: lib + "n.get(filter='.x', default=2)", want: "2"},
		{name: "get field", src: lib + "n.get(field='secret', default='s')", want: `"s"`},
		{name: "get without filter", src: lib + "n.get({})", wantErr: "get: pass filter"},
		{name: "getCmd missing argument", src: lib + "n.getCmd()", wantErr: "Missing argument: command"},
		{name: "regexMatch", src: lib + "n.regexMatch('^a', 'abc')", want: "true"},
		{name: "randString", src: lib + "std.length(n.randString(5))", want: "5"},
		{name: "render", src: lib + "n.render('1 + 1')", want: "2"},
		{name: "getConfig", src: lib + "n.getConfig().test", opts: Options{Test: true}, want: "true"},
		{name: "getPath", src: lib + "n.getPath()", want: `""`},
	})
}

// TestNativeLibCoversNatives checks the library wraps every native
// function, so none lacks its defaults.
func TestNativeLibCoversNatives(t *testing.T) {
	got, err := eval(t, "std.objectFieldsAll(import 'etcha/native.libsonnet')", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range natives(&host{}) {
		names = append(names, `"`+f.Name+`"`)
	}
	slices.Sort(names)
	if want := "[" + strings.Join(names, ",") + "]"; got != want {
		t.Fatalf("library fields = %s, want %s", got, want)
	}
}

// TestNativeLibNotBundled checks Load serves the library without reading
// the disk or copying it into the bundle, and that a bundle renders it
// without carrying it.
func TestNativeLibNotBundled(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.jsonnet": "local n = import 'etcha/native.libsonnet';\n{run: [{id: n.getEnv('ID', 'x')}]}\n",
		// A file of the same name next to the pattern is not used.
		"etcha/native.libsonnet": "error 'read from disk'",
	})
	t.Chdir(dir)
	b, err := Load("p.jsonnet")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(b.Files), "/p.jsonnet"; got != want {
		t.Fatalf("bundle files = %s, want %s", got, want)
	}
	res, err := (&Bundle{Entrypoint: b.Entrypoint, Files: b.Files}).Render(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Pattern.Run[0].ID, "x"; got != want {
		t.Fatalf("id = %q, want %q", got, want)
	}
}

// TestNativeLibFormatted checks the shipped library passes `lint -f`.
func TestNativeLibFormatted(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(".", "native.libsonnet"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Format("native.libsonnet", src)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(src) {
		t.Fatalf("native.libsonnet is not formatted; want:\n%s", out)
	}
}
