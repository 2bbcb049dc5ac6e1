package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/dispenser-dev/dispenser/internal/etcha"
	"github.com/dispenser-dev/dispenser/internal/version"
)

const usage = `Usage: etcha [-c config] [-x key=value]... [-d] [-l level] <command> [flags] [args]

Commands:
  generate-keys [type]                  print a new key pair (alias gen-keys)
  build <pattern.jsonnet> [dest] [source]
                                        build, sign and write a pattern JWT
  local [-r] [-c] [-s source] [-f parentIDs] <pattern.jsonnet | jsonnet>
                                        run a pattern's run commands here
  render <jwt | pattern.jsonnet | jsonnet>
                                        print the rendered pattern as JSON
  jwt <path>                            print a JWT's claims and verify it
  compare [-i] <new jwt> <old jwt>      exit 0 if equal, 1 if different
  test [-b] <path>                      test patterns (change, check, remove, check)
  lint [-f] <path>                      check patterns parse, validate and are formatted
  run [-o]                              listen mode: restore, pull and run sources, receive
                                        pushes, follow runFrequency and etcd:/// keys;
                                        -o runs every source once and exits
  push [-c] [-h host] [-n filter] [-f parentIDs] <source> [command | pattern.jsonnet]
                                        sign and push a pattern or command to targets
  shell <source> <target | host[:port]> open the source's shell on a target: stdin in,
                                        stdout and stderr out, its exit code
  version                               print the version

Global flags:
`

// run parses the global flags, loads the configuration and runs one
// command. env is the process environment (etcha_* config overrides,
// envInherit); stdin is relayed by `etcha shell`.
func run(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("etcha", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SetInterspersed(false)
	fs.Usage = func() { fmt.Fprint(stderr, usage+fs.FlagUsages()) }
	configPath := fs.StringP("config", "c", "", "config `file` (JSON or Jsonnet); default: etcha.jsonnet searched upward to your home directory, used only if owned by you or root and not writable by others")
	overrides := fs.StringArrayP("set", "x", nil, "override a config `key=value` (nested keys joined with _), repeatable")
	noExternal := fs.BoolP("no-external", "d", false, "disable Jsonnet natives that reach outside (getCmd, getFile, getRecord)")
	level := fs.StringP("log-level", "l", "info", "minimum log `level`: none, debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit (same as the version command)")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.String())
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return etcha.Usagef("no command given; pick one of the commands listed above")
	}
	logger, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	app := &etcha.App{Env: env, Stdout: stdout, Logger: logger, Version: version.String(), NoExternal: *noExternal}
	name, rest := fs.Arg(0), fs.Args()[1:]
	oneShotGC(name, env)
	switch name {
	case "version":
		_, err := fmt.Fprintln(stdout, app.Version)
		return err
	case "generate-keys", "gen-keys":
		if len(rest) > 1 {
			return etcha.Usagef("generate-keys takes at most one argument, the key type")
		}
		return app.GenerateKeys(strings.Join(rest, ""))
	}
	app.Config, err = etcha.LoadConfig(ctx, etcha.LoadOptions{Path: *configPath, Env: env, Overrides: *overrides, NoExternal: *noExternal, Logger: logger})
	if err != nil {
		return err
	}
	return dispatch(ctx, app, name, rest, stdin, stderr)
}

// oneShotGCPercent is the GOGC of the commands that do one job and exit.
const oneShotGCPercent = 400

// oneShotGC lets the heap of a command other than run grow to five times
// its live size between collections (GOGC=400): these commands exit after
// one job, whose heap is small (a render of a 100-command pattern peaks at
// a few MiB), and the default collects during the render itself, a few ms
// of a run that takes about twenty. A GOGC in env is left alone.
func oneShotGC(name string, env []string) {
	if name == "run" {
		return
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOGC=") {
			return
		}
	}
	debug.SetGCPercent(oneShotGCPercent)
}

// dispatch parses a command's flags and arguments and runs it.
func dispatch(ctx context.Context, app *etcha.App, name string, args []string, stdin io.Reader, stderr io.Writer) error {
	fs := pflag.NewFlagSet("etcha "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	switch name {
	case "build":
		pos, err := parse(fs, args, 1, 3)
		if err != nil {
			return err
		}
		pos = append(pos, "", "")
		return app.Build(ctx, etcha.BuildOptions{Pattern: pos[0], Dest: pos[1], Source: pos[2]})
	case "local":
		o := etcha.LocalOptions{}
		fs.BoolVarP(&o.Remove, "remove", "r", false, "run in remove mode")
		fs.BoolVarP(&o.Check, "check", "c", false, "run in check mode")
		fs.StringVarP(&o.Source, "source", "s", "", "source whose exec, vars and checkOnly apply")
		fs.StringSliceVarP(&o.ParentIDs, "filter", "f", nil, "only run descendants of these group `ids`")
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		o.Target = pos[0]
		return app.Local(ctx, o)
	case "render":
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return app.Render(ctx, pos[0])
	case "jwt":
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return app.JWT(ctx, pos[0])
	case "compare":
		ignore := fs.BoolP("ignore-version", "i", false, "ignore etchaVersion differences")
		pos, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		return app.Compare(ctx, pos[0], pos[1], *ignore)
	case "test":
		build := fs.BoolP("build", "b", false, "also test build commands")
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return app.Test(ctx, pos[0], *build)
	case "lint":
		format := fs.BoolP("format", "f", false, "also check formatting")
		pos, err := parse(fs, args, 1, 2)
		if err != nil {
			return err
		}
		// The tutorial passes a truthy second argument instead of -f (spec §9 #14).
		return app.Lint(ctx, pos[0], *format || len(pos) == 2 && pos[1] != "" && pos[1] != "false")
	case "run":
		once := fs.BoolP("once", "o", false, "run every source once, then exit (no listener)")
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		kill, stop := secondSignal()
		defer stop()
		return app.Run(ctx, etcha.RunOptions{Once: *once, Kill: kill})
	case "push":
		o := etcha.PushOptions{}
		fs.SetInterspersed(false) // the command pushed may have flags of its own
		fs.BoolVarP(&o.Check, "check", "c", false, "ask the targets to run in check mode")
		fs.StringVarP(&o.Host, "host", "h", "", "push to this `host[:port]` only (https, port 4000)")
		fs.StringVarP(&o.TargetFilter, "filter", "n", "", "only targets whose name matches this `regexp`")
		fs.StringSliceVarP(&o.ParentIDs, "parents", "f", nil, "only run descendants of these group `ids`")
		pos, err := parse(fs, args, 1, -1)
		if err != nil {
			return err
		}
		o.Source, o.Payload = pos[0], strings.Join(pos[1:], " ")
		return app.Push(ctx, o)
	case "shell":
		pos, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		return app.Shell(ctx, etcha.ShellOptions{Source: pos[0], Target: pos[1], Stdin: stdin, Stderr: stderr})
	}
	return etcha.Usagef("unknown command %q; run etcha --help for the list of commands", name)
}

// parse parses a command's flags and checks it has min to max arguments
// (max -1: no limit).
func parse(fs *pflag.FlagSet, args []string, min, max int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, usageErr(err)
	}
	if n := fs.NArg(); n < min || max >= 0 && n > max {
		want := fmt.Sprintf("%d", min)
		if max < 0 {
			want = fmt.Sprintf("at least %d", min)
		} else if max > min {
			want = fmt.Sprintf("%d to %d", min, max)
		}
		return nil, etcha.Usagef("%s takes %s arguments, got %d; run etcha --help for its usage", fs.Name(), want, n)
	}
	return fs.Args(), nil
}

func usageErr(err error) error {
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	return etcha.Usagef("%v; run etcha --help for the usage", err)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	switch level {
	case "none":
		return slog.New(slog.DiscardHandler), nil
	case "debug":
		l = slog.LevelDebug
	case "info", "":
		l = slog.LevelInfo
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, etcha.Usagef("-l %q is not a log level; use none, debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// report prints err as one "etcha: ..." line and returns the exit code:
// 0 for success and --help, the *etcha.Error code (2 for usage errors),
// else 1.
func report(stderr io.Writer, err error) int {
	var e *etcha.Error
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &e):
		if e.Err != nil {
			fmt.Fprintf(stderr, "etcha: %s\n", oneLine(e.Err))
		}
		return e.Code
	default:
		fmt.Fprintf(stderr, "etcha: %s\n", oneLine(err))
		return 1
	}
}

// oneLine joins the lines of a multi-line error (Jsonnet stack traces,
// errors.Join) so every error is one line.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " / ")
}

// secondSignal returns a channel closed by the second SIGINT or SIGTERM
// (the first one ends ctx, through main's signal.NotifyContext), so that
// it skips the grace period; stop ends the watching goroutine. It listens
// from the start, so a second signal that follows the first at once is
// not missed.
func secondSignal() (kill <-chan struct{}, stop func()) {
	k, done := make(chan struct{}), make(chan struct{})
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer signal.Stop(sig)
		for n := 1; ; n++ {
			select {
			case <-sig:
				if n == 2 {
					close(k)
					return
				}
			case <-done:
				return
			}
		}
	})
	return k, func() {
		close(done)
		wg.Wait()
	}
}
