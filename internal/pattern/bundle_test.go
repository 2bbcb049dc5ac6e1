package pattern

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// writeFiles creates files (slash paths relative to dir) with contents.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, text := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func keys(m map[string]string) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestLoadCollectsImports(t *testing.T) {
	abs, err := filepath.Abs("testdata/load")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(abs)
	b, err := Load("patterns/app/main.jsonnet")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := b.Entrypoint, "/patterns/app/main.jsonnet"; got != want {
		t.Fatalf("Entrypoint = %q, want %q", got, want)
	}
	want := "/lib/blob.bin /lib/inner/deep.libsonnet /lib/util.libsonnet /patterns/app/files/motd.txt /patterns/app/main.jsonnet"
	if got := keys(b.Files); got != want {
		t.Fatalf("Files = %s\nwant  %s", got, want)
	}
	if got, want := b.Files["/patterns/app/files/motd.txt"], "welcome\n"; got != want {
		t.Fatalf("motd = %q, want %q", got, want)
	}
	if got, want := b.Root, abs; got != want {
		t.Fatalf("Root = %q, want %q", got, want)
	}
}

func TestLoadFromSubdirectoryUsesCommonAncestor(t *testing.T) {
	abs, err := filepath.Abs("testdata/load")
	if err != nil {
		t.Fatal(err)
	}
	// The pattern imports ../../lib from patterns/app: from patterns/app
	// as cwd, imports leave the cwd, so the root becomes testdata/load.
	t.Chdir(filepath.Join(abs, "patterns", "app"))
	b, err := Load("main.jsonnet")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := b.Entrypoint, "/patterns/app/main.jsonnet"; got != want {
		t.Fatalf("Entrypoint = %q, want %q", got, want)
	}
	if _, ok := b.Files["/lib/util.libsonnet"]; !ok {
		t.Fatalf("Files = %s, want /lib/util.libsonnet", keys(b.Files))
	}
}

func TestBundleJSONShape(t *testing.T) {
	b := &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": "{}"}, Root: "/x"}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), `{"entrypoint":"/main.jsonnet","files":{"/main.jsonnet":"{}"}}`; got != want {
		t.Fatalf("json = %s, want %s", got, want)
	}
}

func TestRenderUsesOnlyTheBundle(t *testing.T) {
	abs, err := filepath.Abs("testdata/load")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(abs)
	b, err := Load("patterns/app/main.jsonnet")
	if err != nil {
		t.Fatal(err)
	}
	// A fresh cwd holding different files at the same relative paths: the
	// importer must not fall back to the disk.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"lib/util.libsonnet":          `{ cmd(id, text):: { id: 'from disk' } }`,
		"patterns/app/files/motd.txt": "disk\n",
	})
	t.Chdir(dir)
	b.Root = ""
	res, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	run := res.Pattern.Run
	if len(run) != 1 {
		t.Fatalf("run = %d commands, want 1", len(run))
	}
	if got, want := run[0].ID+"|"+run[0].Change, "motd|echo welcome"; got != want {
		t.Fatalf("run[0] = %q, want %q", got, want)
	}
}

func TestRenderBadBundle(t *testing.T) {
	tests := []struct {
		name   string
		bundle *Bundle
		want   string
	}{
		{"import outside", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": "{ id: (import '../secret.libsonnet') }",
		}}, `/main.jsonnet:1:8-36: import "../secret.libsonnet" is not in the pattern bundle`},
		{"import missing", &Bundle{Entrypoint: "/p/main.jsonnet", Files: map[string]string{
			"/p/main.jsonnet": "{ id: importstr 'x.txt' }",
		}}, `import "x.txt" is not in the pattern bundle (looked for /p/x.txt)`},
		{"absolute import missing", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": "import '/etc/passwd'",
		}}, `import "/etc/passwd" is not in the pattern bundle`},
		{"entrypoint missing", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/other.jsonnet": "{}",
		}}, "pattern bundle entrypoint /main.jsonnet is not in its files"},
		{"no entrypoint", &Bundle{}, "pattern bundle has no entrypoint"},
		{"nil bundle", nil, "pattern bundle has no entrypoint"},
		{"not an object", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": "[1, 2]",
		}}, "a pattern must be an object"},
		{"null", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": "local x = {}; null",
		}}, "a pattern must be an object: got null; make the file evaluate to an object"},
		{"colliding paths", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": "{run: [{id: 'a'}]}",
			"main.jsonnet":  "{run: [{id: 'b'}]}",
		}}, `pattern bundle files "/main.jsonnet" and "main.jsonnet" are the same path /main.jsonnet`},
		{"colliding import paths", &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet":           "import 'lib/x.libsonnet'",
			"/lib/x.libsonnet":        "{}",
			"/lib/../lib/x.libsonnet": "{run: []}",
		}}, `are the same path /lib/x.libsonnet`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.bundle.Render(t.Context(), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Render error spans lines: %q", err)
			}
		})
	}
}

func TestRenderNormalisesPaths(t *testing.T) {
	// A JWT may carry paths without the leading slash (spec §9 #24).
	b := &Bundle{Entrypoint: "main.jsonnet", Files: map[string]string{
		"main.jsonnet":    "{ id: (import 'lib/x.libsonnet').id }",
		"lib/x.libsonnet": "{ id: 'x' }",
	}}
	res, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if got, want := res.Pattern.ID, "x"; got != want {
		t.Fatalf("ID = %q, want %q", got, want)
	}
}

func TestFromJsonnetWrapRun(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"lib/etcha/hello.libsonnet": `function(dst) { id: 'hello ' + dst, change: 'touch ' + dst }`,
	})
	t.Chdir(dir)
	b, err := FromJsonnet(WrapRun("(import 'lib/etcha/hello.libsonnet')(dst='/tmp/x')"))
	if err != nil {
		t.Fatalf("FromJsonnet: %v", err)
	}
	if got, want := keys(b.Files), "/etcha-snippet.jsonnet /lib/etcha/hello.libsonnet"; got != want {
		t.Fatalf("Files = %s, want %s", got, want)
	}
	res, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if len(res.Pattern.Run) != 1 || res.Pattern.Run[0].ID != "hello /tmp/x" {
		t.Fatalf("run = %s, want one command 'hello /tmp/x'", res.JSON)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"syntax.jsonnet":    "{\n  id: 'x'\n  run: [],\n}\n",
		"missing.jsonnet":   "{\n  a: import 'nope.libsonnet',\n}\n",
		"badimport.jsonnet": "{ a: import 'bad.libsonnet' }",
		"bad.libsonnet":     "{\n\n  b: ]\n}",
	})
	t.Chdir(dir)
	tests := []struct {
		file string
		want string
	}{
		{"syntax.jsonnet", "syntax.jsonnet:3:3-6: Expected a comma before next field"},
		{"missing.jsonnet", `missing.jsonnet:2:6-29: import "nope.libsonnet": file ` + filepath.Join(dir, "nope.libsonnet") + " does not exist"},
		{"badimport.jsonnet", `bad.libsonnet:3:6-7: Unexpected: "]" while parsing terminal (imported at `},
		{"nofile.jsonnet", "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Load error spans lines: %q", err)
			}
		})
	}
}

func TestLoadOutsideCwd(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"shared/x.libsonnet": "{ id: 'shared' }",
		"work/p.jsonnet":     "import '../shared/x.libsonnet'",
	})
	t.Chdir(filepath.Join(dir, "work"))
	b, err := Load("p.jsonnet")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := keys(b.Files), "/shared/x.libsonnet /work/p.jsonnet"; got != want {
		t.Fatalf("Files = %s, want %s", got, want)
	}
	res, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if got, want := res.Pattern.ID, "shared"; got != want {
		t.Fatalf("ID = %q, want %q", got, want)
	}
}

func TestLoadAbsoluteImport(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "etc", "x.libsonnet")
	writeFiles(t, dir, map[string]string{
		"etc/x.libsonnet": "{ id: 'abs' }",
		"work/p.jsonnet":  "import '" + abs + "'",
	})
	t.Chdir(filepath.Join(dir, "work"))
	b, err := Load("p.jsonnet")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// An absolute import keeps working only if bundle paths are absolute.
	if _, ok := b.Files[filepath.ToSlash(abs)]; !ok {
		t.Fatalf("Files = %s, want %s", keys(b.Files), abs)
	}
	res, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if got, want := res.Pattern.ID, "abs"; got != want {
		t.Fatalf("ID = %q, want %q", got, want)
	}
}
