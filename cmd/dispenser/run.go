package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/daemon"
	"github.com/dispenser-dev/dispenser/internal/etcdenv"
	"github.com/dispenser-dev/dispenser/internal/etcha"
	"github.com/dispenser-dev/dispenser/internal/metrics"
	"github.com/dispenser-dev/dispenser/internal/supervisor"
	"github.com/dispenser-dev/dispenser/internal/version"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// run is dispenser without the process around it: it parses args, connects
// to etcd, keeps the target in sync and supervises the child until the
// child exits, a SIGTERM/SIGINT arrives, or ctx is cancelled (which counts
// as SIGTERM). It returns the child's *supervisor.ExitError when the child
// failed, a usageError for bad flags, and nil for a clean stop.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.version {
		_, err := fmt.Fprintln(stdout, version.String())
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return usageError{err}
	}

	patterns, err := loadPatterns(ctx, cfg, stdout, log)
	if err != nil {
		return err
	}

	// Subscribe before anything slow, so no signal is lost during start-up.
	sigs := daemon.Subscribe()
	defer sigs.Stop()

	etcdCfg, stopEtcd, err := etcdConfig(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopEtcd()
	w, err := newWriter(cfg, log)
	if err != nil {
		return err
	}
	d := daemon.New(daemon.Options{
		Prefix:         cfg.prefix,
		Target:         cfg.target,
		Writer:         w,
		Signal:         cfg.signal,
		Once:           cfg.once,
		WaitMin:        cfg.waitMin,
		WaitMax:        cfg.waitMax,
		KillTimeout:    cfg.killTimeout,
		Reap:           cfg.reap,
		RunAs:          cfg.runAs,
		Argv:           cfg.argv,
		WatchProbe:     cfg.watchProbe,
		InitialTimeout: cfg.initTimeout,
		Stdout:         stdout,
		Stderr:         stderr,
		Logger:         log,
		Signals:        sigs,
		Patterns:       patterns,
	})
	if cfg.listenHTTP != "" { // before connecting, so probes get a 503 that says why
		stop, err := serveHTTP(ctx, cfg.listenHTTP, d, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	client, closeClient, err := d.Connect(ctx, etcdCfg)
	if err != nil || client == nil {
		return err
	}
	defer closeClient()
	return d.Run(ctx, client)
}

// loadPatterns reads --etcha-config and checks that patterns have a verify
// key: they never run unsigned. It returns nil without --patterns. The
// output of etcha:stdout events goes to stdout, a line each.
func loadPatterns(ctx context.Context, cfg *config, stdout io.Writer, log *slog.Logger) (*daemon.Patterns, error) {
	if cfg.patterns == "" {
		return nil, nil
	}
	app := &etcha.App{Env: os.Environ(), Stdout: stdout, Logger: log}
	if cfg.etchaConfig != "" {
		c, err := etcha.LoadConfig(ctx, etcha.LoadOptions{Path: cfg.etchaConfig, Env: os.Environ(), Logger: log})
		if err != nil {
			return nil, usageError{fmt.Errorf("--etcha-config: %w", err)}
		}
		app.Config = c
	}
	if len(cfg.verifyKeys) == 0 && (app.Config == nil || len(app.Config.Run.VerifyKeys) == 0) {
		return nil, usagef("--patterns needs a key to verify pattern JWTs with: add --verify-key=KEY (or DISPENSER_VERIFY_KEYS, DISPENSER_VERIFY_KEYS_FILE, or run.verifyKeys in --etcha-config); patterns never run unsigned")
	}
	return &daemon.Patterns{Prefix: cfg.patterns, App: app, VerifyKeys: cfg.verifyKeys, StateDir: cfg.stateDir}, nil
}

// serveHTTP starts the /metrics, /healthz and /readyz server. The returned
// function stops it; it runs last, after the child has stopped.
func serveHTTP(ctx context.Context, addr string, d *daemon.Daemon, log *slog.Logger) (stop func(), err error) {
	serve, err := d.Metrics().Listen(metrics.Options{
		Addr:   addr,
		Health: d.Health,
		Ready:  d.Ready,
	})
	if err != nil {
		return nil, fmt.Errorf("--listen-http: %w", err)
	}
	httpCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- serve(httpCtx) }()
	log.Info("serving /metrics, /healthz and /readyz", "addr", addr)
	return func() {
		cancel()
		if err := <-done; err != nil {
			log.Warn("http server", "err", err)
		}
	}, nil
}

func newLogger(cfg *config, stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", cfg.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(stderr, opts)), nil
}

func newWriter(cfg *config, log *slog.Logger) (*writer.Writer, error) {
	w, err := writer.New(writer.Options{
		Dir:       cfg.target,
		Layout:    cfg.layout,
		FileMode:  cfg.mode,
		UID:       cfg.uid,
		GID:       cfg.gid,
		Fsync:     cfg.fsync,
		Logger:    log,
		KeyPrefix: cfg.prefix,
	})
	if errors.Is(err, writer.ErrChownNotPermitted) {
		return nil, usageError{fmt.Errorf("--owner/--group: %w", err)}
	}
	if err != nil {
		return nil, fmt.Errorf("--target %s: %w", cfg.target, err)
	}
	return w, nil
}

// etcdConfig reads the ETCD_* environment, or starts the embedded etcd when
// --embedded-etcd is set. The returned stop function is always safe to call.
func etcdConfig(ctx context.Context, cfg *config, log *slog.Logger) (clientv3.Config, func(), error) {
	if cfg.embedded == "" {
		env, err := etcdenv.Load(os.LookupEnv)
		if err != nil {
			return clientv3.Config{}, nil, usageError{err}
		}
		for _, w := range env.Warnings {
			log.Warn(w)
		}
		return env.Config, func() {}, nil
	}
	if v, ok := os.LookupEnv("ETCD_ENDPOINTS"); ok && v != "" {
		return clientv3.Config{}, nil, usagef("--embedded-etcd and ETCD_ENDPOINTS=%s both say where etcd is; unset one", v)
	}
	endpoint, stop, err := startEmbedded(ctx, cfg.embedded, cfg.embedListen)
	if err != nil {
		return clientv3.Config{}, nil, err
	}
	log.Info("embedded etcd started; for development only", "endpoint", endpoint, "dir", cfg.embedded)
	c, err := etcdenv.Config(etcdenv.MapLookup(map[string]string{"ETCD_ENDPOINTS": endpoint}))
	if err != nil {
		stop()
		return clientv3.Config{}, nil, err
	}
	return c, stop, nil
}

// report prints err for the operator and returns the exit status: 0 for
// success and --help, 2 for usage errors, 127 or 126 when the child cannot
// be run (not found, not executable), the child's status when it failed,
// 1 otherwise.
func report(stderr io.Writer, err error) int {
	var exit interface{ ExitCode() int }
	var start *supervisor.StartError
	var usage usageError
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &start):
		fmt.Fprintf(stderr, "dispenser: %v\n", err)
		return start.ExitCode()
	case errors.As(err, &exit):
		return exit.ExitCode() // the daemon already logged how the child ended
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "dispenser: %v\nTry: dispenser --help\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "dispenser: %v\n", err)
		return 1
	}
}
