package etcha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/pattern"
)

// Lint checks every *.jsonnet and *.libsonnet file under path, skipping
// lint.exclude (spec §7.2):
//
//  1. the file and its imports parse and evaluate with test = true under
//     the source "test", like `etcha test`: sources.test.exec and vars
//     apply; .jsonnet files must also be valid patterns (§2.4);
//  2. with format set, the file must equal its jsonnetfmt form;
//  3. each configured lint.linters exec is fed every command's check,
//     change and remove on stdin and must exit 0 (default: none).
//
// It prints one line per problem and returns an exit-1 error if any file
// has one.
func (a *App) Lint(ctx context.Context, path string, format bool) error {
	files, err := a.walk(path, ".jsonnet", ".libsonnet")
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("lint %s: no .jsonnet or .libsonnet files found; pass a file or a directory holding patterns", path)
	}
	bad := 0
	for _, f := range files {
		problems := a.lintFile(ctx, f, format)
		for _, p := range problems {
			fmt.Fprintf(a.stdout(), "%s: %s\n", f, p)
		}
		if len(problems) > 0 {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("found linting errors in %d of %d files; fix the problems listed above", bad, len(files))
	}
	return nil
}

func (a *App) lintFile(ctx context.Context, path string, format bool) []string {
	var problems []string
	if format {
		if p := formatProblem(path); p != "" {
			problems = append(problems, p)
		}
	}
	b, err := pattern.Load(path)
	if err != nil {
		return append(problems, err.Error())
	}
	opts, err := a.renderOptions(renderRequest{sourceName: TestSource, source: a.testSource(), test: true})
	if err != nil {
		return append(problems, err.Error())
	}
	if strings.HasSuffix(path, ".libsonnet") {
		if _, err := b.Evaluate(ctx, opts); err != nil {
			problems = append(problems, err.Error())
		}
		return problems
	}
	res, err := b.Render(ctx, opts)
	if err != nil {
		return append(problems, err.Error())
	}
	return append(problems, a.runLinters(ctx, res.Pattern)...)
}

// formatProblem compares a file with its canonical format and describes
// the first difference, or returns "".
func formatProblem(path string) string {
	src, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	want, err := pattern.Format(path, src)
	if err != nil {
		return "" // the syntax error is reported by the load step
	}
	if bytes.Equal(src, want) {
		return ""
	}
	have, wantLines := strings.Split(string(src), "\n"), strings.Split(string(want), "\n")
	for i := 0; ; i++ {
		h, w := lineAt(have, i), lineAt(wantLines, i)
		if h != w {
			return fmt.Sprintf("not formatted properly at line %d: have %q, want %q; run a Jsonnet formatter (jsonnetfmt -i)", i+1, h, w)
		}
	}
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "<end of file>"
}

// runLinters feeds each command's scripts to every configured linter.
func (a *App) runLinters(ctx context.Context, p *pattern.Pattern) []string {
	linters := a.config().Lint.Linters
	names := make([]string, 0, len(linters))
	for n, e := range linters {
		if e != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var problems []string
	for _, list := range []command.Commands{p.Build, p.Run} {
		eachCommand(list, func(c *command.Command) {
			script := strings.Join(nonEmpty(c.Check, c.Change, c.Remove), "\n")
			if script == "" {
				return
			}
			for _, n := range names {
				if out, err := a.runLinter(ctx, linters[n], script); err != nil {
					problems = append(problems, fmt.Sprintf("command %q: linter %s: %v: %s", c.ID, n, err, strings.TrimSpace(out)))
				}
			}
		})
	}
	return problems
}

func (a *App) runLinter(ctx context.Context, e *command.Exec, script string) (string, error) {
	if e.ContainerImage != "" {
		return "", errors.New("container linters are not supported yet; set command to a local linter such as \"shellcheck -s bash -\"")
	}
	args := strings.Fields(e.Command)
	if len(args) == 0 {
		return "", errors.New("linter has no command; set lint.linters.<name>.command")
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(script)
	cmd.Dir = e.WorkDir
	cmd.Env = []string{} // never the process environment unless envInherit
	for k, v := range a.execEnv(*e) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func eachCommand(cmds command.Commands, f func(*command.Command)) {
	for _, c := range cmds {
		if c.IsGroup() {
			eachCommand(c.Commands, f)
			continue
		}
		f(c)
	}
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
