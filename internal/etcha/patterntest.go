package etcha

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/pattern"
)

// TestSource is the source whose exec and vars apply under `etcha test`.
const TestSource = "test"

// Test runs the procedure of spec §7.1 on every *.jsonnet file under path
// (skipping lint.exclude), rendered with vars.test = true under the source
// "test" (if configured). For each pattern's run list (and build list with
// build set):
//
//  1. change mode: any error fails;
//  2. check mode: any check that would change fails (not idempotent);
//     the later steps still run, so remove mode cleans up;
//  3. remove mode: any error fails;
//  4. check mode: every command that needed a change in step 1, has a
//     check and a remove, and was removed in step 3 must fail its check
//     again.
//
// It prints one line per problem, or "<file>: ok", and returns an exit-1
// error if any pattern failed.
func (a *App) Test(ctx context.Context, path string, build bool) error {
	files, err := a.walk(path, ".jsonnet")
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("test %s: no .jsonnet files found; pass a pattern file or a directory holding patterns", path)
	}
	src := a.testSource()
	failed := 0
	for _, f := range files {
		problems := a.testFile(ctx, f, src, build)
		for _, p := range problems {
			fmt.Fprintf(a.stdout(), "%s: %s\n", f, p)
		}
		if len(problems) > 0 {
			failed++
			continue
		}
		fmt.Fprintf(a.stdout(), "%s: ok\n", f)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d patterns failed their tests; fix the commands listed above", failed, len(files))
	}
	return nil
}

// testSource returns sources.test, whose exec and vars apply under both
// `etcha test` and `etcha lint` (spec §7.1); an empty source if it is not
// configured.
func (a *App) testSource() *SourceConfig {
	if src := a.config().Sources[TestSource]; src != nil {
		return src
	}
	return &SourceConfig{}
}

func (a *App) testFile(ctx context.Context, path string, src *SourceConfig, build bool) []string {
	b, err := pattern.Load(path)
	if err != nil {
		return []string{err.Error()}
	}
	res, err := a.renderBundle(ctx, b, renderRequest{sourceName: TestSource, source: src, test: true})
	if err != nil {
		return []string{err.Error()}
	}
	p := res.Pattern
	var problems []string
	lists := []struct {
		name  string
		cmds  command.Commands
		layer string
		exec  *command.Exec
	}{{"build", p.Build, "buildExec", p.BuildExec}, {"run", p.Run, "runExec", p.RunExec}}
	for _, l := range lists {
		if l.name == "build" && !build {
			continue
		}
		exec, err := a.mergeExec(TestSource, src, l.layer, l.exec)
		if err != nil {
			problems = append(problems, l.name+": "+err.Error())
			continue
		}
		for _, s := range a.testCommands(ctx, l.cmds, exec) {
			problems = append(problems, l.name+": "+s)
		}
	}
	return problems
}

// testCommands runs the four steps on one list and returns its problems.
// A change-mode error stops there; any other problem is recorded and the
// remaining steps still run, so remove mode cleans up after a pattern that
// is not idempotent.
func (a *App) testCommands(ctx context.Context, cmds command.Commands, exec command.Exec) []string {
	run := func(m command.Mode) command.Result {
		return a.runCommands(ctx, cmds, command.Options{Mode: m, Exec: exec})
	}
	changed := run(command.ModeChange) // (1)
	if changed.Err != nil {
		return []string{fmt.Sprintf("change mode: %v", changed.Err)}
	}
	var problems []string
	if r := run(command.ModeCheck); r.Err != nil || len(r.Changed) > 0 { // (2)
		problems = append(problems, checkProblem("after change mode (not idempotent)", r))
	}
	removed := run(command.ModeRemove) // (3)
	if removed.Err != nil {
		return append(problems, fmt.Sprintf("remove mode: %v", removed.Err))
	}
	after := run(command.ModeCheck) // (4)
	if after.Err != nil {
		return append(problems, checkProblem("after remove mode", after))
	}
	if still := stillPresent(cmds, changed, removed, after); len(still) > 0 {
		problems = append(problems, fmt.Sprintf("check after remove mode passes for %s; make remove undo what change did", strings.Join(still, ", ")))
	}
	return problems
}

// stillPresent returns the ids that needed a change in step 1, have a
// check and a remove, were removed in step 3, and yet pass their check in
// step 4.
func stillPresent(cmds command.Commands, changed, removed, after command.Result) []string {
	needed := map[string]bool{}
	for _, id := range changed.Changed {
		needed[id] = true
	}
	for _, o := range changed.Outputs {
		if o.Phase == command.ModeCheck && o.ExitCode != 0 {
			needed[o.ID] = true
		}
	}
	removable := checkAndRemove(cmds, map[string]bool{})
	var still []string
	for _, id := range removed.Removed {
		if needed[id] && removable[id] && !slices.Contains(after.Changed, id) && !slices.Contains(still, id) {
			still = append(still, id)
		}
	}
	return still
}

func checkProblem(when string, r command.Result) string {
	if r.Err != nil {
		return fmt.Sprintf("check mode %s: %v", when, r.Err)
	}
	return fmt.Sprintf("check mode %s: would change %s; make check pass once change has run", when, strings.Join(r.Changed, ", "))
}

// checkAndRemove collects the ids of commands with both a check and a
// remove, at any depth.
func checkAndRemove(cmds command.Commands, ids map[string]bool) map[string]bool {
	for _, c := range cmds {
		if c.IsGroup() {
			checkAndRemove(c.Commands, ids)
			continue
		}
		if c.Check != "" && c.Remove != "" {
			ids[c.ID] = true
		}
	}
	return ids
}

// walk returns the files under root whose names end in one of exts, in
// lexical order, skipping paths that match lint.exclude. A file root is
// returned as is.
func (a *App) walk(root string, exts ...string) ([]string, error) {
	exclude, err := a.config().exclude()
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("walk: %w; pass an existing file or directory", err)
	}
	if !st.IsDir() {
		return []string{root}, nil
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root && exclude != nil && exclude.MatchString(filepath.ToSlash(p)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(p, e) }) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", root, err)
	}
	return files, nil
}
