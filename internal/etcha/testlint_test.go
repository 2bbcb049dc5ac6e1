package etcha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// patternTree writes patterns whose commands keep state in files under
// dir/state, and returns the tree's root.
func patternTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, text := range files {
		writeFile(t, root, name, text)
	}
	return root
}

func TestTestCommand(t *testing.T) {
	state := t.TempDir()
	f := func(name string) string { return filepath.Join(state, name) }
	lib := `function(path) {id: 'file ' + path, check: 'test -f ' + path, change: 'touch ' + path, remove: 'rm ' + path}
`
	for _, tc := range []struct {
		name    string
		pattern string
		build   bool
		want    string // "" means the test passes
		also    string // a second problem expected in the output
		cleaned string // a file remove mode must have deleted
	}{
		{name: "good", pattern: fmt.Sprintf(`local file = import 'lib/file.libsonnet';
{run: [file(%q), {id: 'noop', always: true, change: 'true'}]}`, f("good"))},
		{name: "uses test var", pattern: fmt.Sprintf(`{run: [if std.native('getConfig')().vars.test && std.native('getConfig')().test then {id: 'file', check: 'test -f %[1]s', change: 'touch %[1]s', remove: 'rm %[1]s'} else {id: 'not test', check: 'false', change: 'true'}]}`, f("var"))},
		{name: "not idempotent", pattern: `{run: [{id: 'flaky', check: 'false', change: 'true'}]}`, want: "not idempotent): would change flaky"},
		{name: "remove does not undo", pattern: fmt.Sprintf(`{run: [{id: 'sticky', check: 'test -f %[1]s', change: 'touch %[1]s', remove: 'true'}]}`, f("sticky")), want: "check after remove mode passes for sticky"},
		{name: "not idempotent still removed", pattern: fmt.Sprintf(
			// The check fails on its first two runs (steps 1 and 2), then passes, so remove mode removes.
			`{run: [{id: 'half', check: 'n=$(cat %[2]s 2>/dev/null || echo 0); echo $((n+1)) > %[2]s; test $n -ge 2', change: 'touch %[1]s', remove: 'rm %[1]s; exit 3'}]}`,
			f("half"), f("half.count")),
			want: "not idempotent): would change half", cleaned: f("half"), also: `remove mode: command "half": remove exited with status 3`},
		{name: "change fails", pattern: `{run: [{id: 'broken', always: true, change: 'exit 2'}]}`, want: "change mode"},
		{name: "remove fails", pattern: `{run: [{id: 'badremove', always: true, change: 'true', remove: 'exit 2'}]}`, want: "remove mode"},
		{name: "build list only with -b", pattern: `{build: [{id: 'b', always: true, change: 'exit 2'}], run: []}`},
		{name: "build list tested", build: true, pattern: `{build: [{id: 'b', always: true, change: 'exit 2'}], run: []}`, want: "build: change mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := patternTree(t, map[string]string{"lib/file.libsonnet": lib, "p.jsonnet": tc.pattern, "etcha.jsonnet": "not jsonnet ("})
			a, out := newApp(t, baseConfig)
			err := a.Test(context.Background(), root, tc.build)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Test() = %v; output:\n%s", err, out)
				}
				if !strings.Contains(out.String(), "p.jsonnet: ok") {
					t.Fatalf("output %q, want ok", out)
				}
				return
			}
			if got := exitCode(err); got != 1 {
				t.Fatalf("Test() = %v, exit %d, want 1", err, got)
			}
			if !strings.Contains(out.String(), tc.want) || !strings.Contains(out.String(), tc.also) {
				t.Fatalf("output %q, want %q and %q", out, tc.want, tc.also)
			}
			if tc.cleaned != "" {
				if _, err := os.Stat(tc.cleaned); !os.IsNotExist(err) {
					t.Fatalf("%s still exists: remove mode did not run (stat: %v)", tc.cleaned, err)
				}
			}
		})
	}
}

func TestLint(t *testing.T) {
	formatted := "{\n  run: [\n    { id: 'a', change: 'true' },\n  ],\n}\n"
	for _, tc := range []struct {
		name   string
		files  map[string]string
		format bool
		cfg    []string
		want   []string // problems expected in the output; none means clean
	}{
		{name: "clean", format: true, files: map[string]string{
			"p.jsonnet": formatted, "lib/f.libsonnet": "function(x) { id: x }\n", "etcha.jsonnet": "((( excluded",
		}},
		{name: "unformatted", format: true, files: map[string]string{"p.jsonnet": `{run: [{id: "a", change: "true"}]}`},
			want: []string{"p.jsonnet: not formatted properly at line 1"}},
		{name: "unformatted without -f", files: map[string]string{"p.jsonnet": `{run: [{id: "a", change: "true"}]}`}},
		{name: "syntax error", files: map[string]string{"p.jsonnet": formatted, "lib/bad.libsonnet": "{\n  a: ,\n}\n"},
			want: []string{"bad.libsonnet:2:"}},
		{name: "invalid pattern", files: map[string]string{"p.jsonnet": `{run: [{id: 'x', change: 'true', onChange: ['nope']}]}`},
			want: []string{`"x"`}},
		{name: "missing import", files: map[string]string{"p.jsonnet": `import 'nothere.libsonnet'`},
			want: []string{"nothere.libsonnet"}},
		{name: "linter", cfg: []string{"lint_linters={\"forbid\": {\"command\": \"grep -q -v forbidden\"}}"},
			files: map[string]string{"p.jsonnet": `{run: [{id: 'ok', change: 'true'}, {id: 'no', change: 'forbidden'}]}`},
			want:  []string{`command "no": linter forbid`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := patternTree(t, tc.files)
			a, out := newApp(t, baseConfig, tc.cfg...)
			err := a.Lint(context.Background(), root, tc.format)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Lint() = %v; output:\n%s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "found linting errors") {
				t.Fatalf("Lint() = %v, want found linting errors", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output %q, want %q", out, w)
				}
			}
		})
	}
}

func TestLintNoFiles(t *testing.T) {
	a, _ := newApp(t, baseConfig)
	if err := a.Lint(context.Background(), t.TempDir(), false); err == nil {
		t.Fatal("Lint(empty dir) = nil, want an error")
	}
	if err := a.Test(context.Background(), filepath.Join(t.TempDir(), "none"), false); err == nil {
		t.Fatal("Test(missing) = nil, want an error")
	}
}

// TestLintAndTestUseTestSource is issue 7 item 24: sources.test (vars and
// exec env) applies under lint as it does under test, so a pattern that
// needs it passes both, and one that must not see it fails both.
func TestLintAndTestUseTestSource(t *testing.T) {
	cfg := baseConfig + `+{sources: {test: {vars: {region: 'lab'}, exec: {env: {STAGE: 'ci'}}}}}`
	for _, tc := range []struct {
		name, pattern string
		ok            bool
	}{
		{name: "needs sources.test", ok: true, pattern: `local c = std.native('getConfig')();
assert c.vars.region == 'lab' : 'vars.region is not lab';
assert std.native('getEnv')('STAGE', null, false) == 'ci' : 'STAGE is not ci';
{ run: [{ id: 'a', always: true, change: 'true' }] }
`},
		{name: "refuses sources.test", pattern: `local c = std.native('getConfig')();
assert !std.objectHas(c.vars, 'region') : 'vars.region is set';
{ run: [{ id: 'a', always: true, change: 'true' }] }
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := patternTree(t, map[string]string{"p.jsonnet": tc.pattern})
			for _, step := range []struct {
				name string
				run  func(a *App) error
			}{
				{"lint", func(a *App) error { return a.Lint(context.Background(), root, false) }},
				{"test", func(a *App) error { return a.Test(context.Background(), root, false) }},
			} {
				a, out := newApp(t, cfg)
				err := step.run(a)
				if got := err == nil; got != tc.ok {
					t.Fatalf("%s: err = %v, want success %v; output:\n%s", step.name, err, tc.ok, out)
				}
			}
		})
	}
}
