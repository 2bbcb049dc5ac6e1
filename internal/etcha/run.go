package etcha

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdenv"
	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/metrics"
	"github.com/dispenser-dev/dispenser/internal/pull"
	"github.com/dispenser-dev/dispenser/internal/source"
)

// DefaultGrace bounds how long `etcha run` lets runs in progress finish
// after SIGTERM/SIGINT when RunOptions.Grace is 0.
const DefaultGrace = 10 * time.Second

// RunOptions are the arguments of `etcha run`.
type RunOptions struct {
	// Once is -o: no listener, ticks or watches; run every source once
	// and return.
	Once bool
	// Grace bounds how long runs in progress may finish once ctx is done;
	// then their commands are killed. 0 means DefaultGrace.
	Grace time.Duration
	// Kill, if set, ends the grace period early when it is closed (a
	// second signal).
	Kill <-chan struct{}
	// Ready, if set, is called once every source has pulled and run at
	// start-up (spec §4.2 step 4), with the listener's address ("" with
	// Once) and certificate. Tests use it; it must not block for long.
	Ready func(addr string, cert tls.Certificate)
	// Listen adjusts the listener's options before it starts (tests
	// shorten its timeouts); nil changes nothing.
	Listen func(*listen.Options)
}

// Run is `etcha run` (spec §4.2):
//
//  1. Sleep a random time up to run.randomizedStartDelaySec.
//  2. Register every source, restoring its verified state or static
//     commands (NewEngine); make the etcd client if a pull path needs it.
//  3. Start the HTTPS listener with the push receiver (not with Once).
//  4. For each source in name order: pull (first valid pull path wins),
//     then run the current pattern unless the pull already ran it or the
//     source is triggerOnly.
//  5. Every runFrequency: pull and run again (spec §11.2); watch every
//     etcd:/// pull path and hand each new value to the source at once
//     (not with Once).
//
// The system events pull (after every pull attempt), push (after every
// push whose JWT verified) and shell (after a shell started) are fired
// for the sources that receive them (spec §4.6).
//
// Once ctx is done (SIGTERM/SIGINT), or a command fired etcha:exit and the
// engine finished it (Engine.Exited), it stops accepting requests and
// starting runs, lets runs in progress finish for up to Grace (or until
// Kill is closed), then kills their commands, and returns nil. With Once
// it returns when step 4 is done and every event it caused was dispatched:
// an error if a source failed (a run error, or no valid pull path).
func (a *App) Run(ctx context.Context, o RunOptions) error {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if err := a.startDelay(ctx); err != nil { // (1)
		if o.Once {
			return fmt.Errorf("run -o interrupted (%v) before any source ran", context.Cause(ctx))
		}
		return nil // a signal during the delay: nothing started
	}
	r, err := a.newRunner(ctx) // (2)
	if err != nil {
		return err
	}
	defer r.close()
	// Runs must outlive the signal by the grace period: engine.Close
	// bounds them, so they get a context the signal does not cancel.
	work := context.WithoutCancel(ctx)
	var srv *listen.Server
	if !o.Once { // (3)
		if srv, err = a.newListener(r, o.Listen); err != nil {
			_ = r.engine.Close(ctx) // nothing ran yet
			return err
		}
	}
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	serveErr := make(chan error, 1)
	if srv != nil {
		wg.Go(func() {
			if err := srv.Run(stop); err != nil {
				serveErr <- err
			}
		})
	}
	started := make(chan []string, 1)
	wg.Go(func() {
		failed := r.startup(stop, work) // (4)
		started <- failed
		if o.Once || stop.Err() != nil {
			return
		}
		r.follow(stop, work, &wg) // (5)
	})
	var failed []string
	select {
	case failed = <-started:
		if o.Ready != nil {
			addr, cert := "", tls.Certificate{}
			if srv != nil {
				addr, cert = srv.Addr(), srv.Certificate()
			}
			o.Ready(addr, cert)
		}
		if o.Once {
			// Dispatch the events start-up caused; a signal ends the
			// wait and is reported below.
			_ = r.engine.Idle(ctx)
			break
		}
		select {
		case <-ctx.Done():
		case err = <-serveErr:
		case <-r.engine.Exited():
			a.logger().Info("Exiting: etcha:exit was fired")
		}
	case <-ctx.Done():
	case err = <-serveErr:
	}
	cancel()
	r.shutdown(o.Grace, o.Kill)
	switch {
	case err != nil:
		return fmt.Errorf("listener: %w", err)
	case o.Once && ctx.Err() != nil:
		return fmt.Errorf("run -o interrupted (%v) before every source ran", context.Cause(ctx))
	case o.Once && len(failed) > 0:
		return fmt.Errorf("run -o: source(s) failed: %s; see the log above", strings.Join(failed, ", "))
	}
	return nil
}

// startDelay sleeps up to run.randomizedStartDelaySec, returning ctx's
// error if ctx ends first.
func (a *App) startDelay(ctx context.Context) error {
	n := a.config().Run.RandomizedStartDelaySec
	if n <= 0 {
		return nil
	}
	d := rand.N(time.Duration(n) * time.Second)
	a.logger().Info("Waiting before start-up (run.randomizedStartDelaySec)", "delay", d.Round(time.Millisecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runner is the running state of `etcha run`: the engine, the fetcher and
// each source's parsed pull paths.
type runner struct {
	a       *App
	engine  *source.Engine
	reg     *prometheus.Registry
	metrics *metrics.Etcha
	fetcher *pull.Fetcher
	etcd    *clientv3.Client // nil if no pull path is etcd:///
	paths   map[string][]pull.Path
}

func (a *App) newRunner(ctx context.Context) (*runner, error) {
	c := a.config()
	r := &runner{a: a, paths: map[string][]pull.Path{}, reg: metrics.NewRegistry()}
	r.metrics = metrics.NewEtcha(r.reg)
	needEtcd := false
	for _, name := range slices.Sorted(maps.Keys(c.Sources)) {
		src := c.Sources[name]
		if src == nil {
			continue
		}
		paths, err := pull.ParseAll(src.PullPaths)
		if err != nil {
			return nil, fmt.Errorf("config sources.%s.%w", name, err)
		}
		r.paths[name] = paths
		for _, p := range paths {
			needEtcd = needEtcd || p.Kind == pull.Etcd
		}
	}
	if needEtcd {
		cli, err := a.etcdClient()
		if err != nil {
			return nil, err
		}
		r.etcd = cli
	}
	r.fetcher = pull.New(pull.Options{
		MaxSize:       int64(a.maxJWTSize()),
		TLSSkipVerify: c.HTTPClient.TLSSkipVerify,
		Etcd:          r.etcd,
		Logger:        a.logger(),
	})
	e, err := a.NewEngine(ctx, EngineOptions{OnResult: r.onResult})
	if err != nil {
		r.close()
		return nil, err
	}
	r.engine = e
	return r, nil
}

// etcdClient makes the one etcd client of the process from the ETCD_*
// variables of App.Env (spec §11.9).
func (a *App) etcdClient() (*clientv3.Client, error) {
	env, err := etcdenv.Load(etcdenv.MapLookup(envMap(a.Env)))
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	for _, w := range env.Warnings {
		a.logger().Warn(w)
	}
	cli, err := clientv3.New(env.Config)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w; check ETCD_ENDPOINTS and the other ETCD_* variables", err)
	}
	return cli, nil
}

// newListener makes the listener (spec §4.10): push, webhooks, shell and
// the metrics endpoint, all behind the rate limit.
func (a *App) newListener(r *runner, adjust func(*listen.Options)) (*listen.Server, error) {
	c := a.config()
	if old := olderRateLimitKey(c.Raw); old != "" {
		return nil, fmt.Errorf("%s is an older Etcha name that etcha does not read, so it would not limit anything; set httpServer.rateLimitRate instead, for example \"10/s\"", old)
	}
	hs := c.HTTPServer
	o := listen.Options{
		ListenAddress:        hs.ListenAddress,
		TLSCertificatePath:   hs.TLSCertificatePath,
		TLSKeyPath:           hs.TLSKeyPath,
		TLSCertificateBase64: hs.TLSCertificateBase64,
		TLSKeyBase64:         hs.TLSKeyBase64,
		RateLimitRate:        hs.RateLimitRate,
		TimeoutPush:          time.Duration(c.Run.TimeoutPush),
		TimeoutWebhook:       time.Duration(c.Run.TimeoutWebhook),
		TimeoutShell:         time.Duration(c.Run.TimeoutShell),
		Pusher:               listen.PusherFunc(r.push),
		Webhooks:             r,
		WebhookPaths:         r.engine.WebhookPaths(),
		Shells:               r,
		Logger:               a.logger(),
	}
	if adjust != nil {
		adjust(&o)
	}
	srv, err := listen.New(o)
	if err != nil {
		return nil, err
	}
	// Without run.systemMetricsKey the handler answers 404.
	if err := srv.Handle(MetricsPath, metrics.Handler(r.reg, c.Run.SystemMetricsKey)); err != nil {
		srv.Close()
		return nil, err
	}
	return srv, nil
}

// olderRateLimitKey names the first key of the configuration that sets a
// rate limit under one of the names older Etcha releases and guides used
// (spec §4.10: rateLimiterRate, http.rateLimitPatterns), or "". A limit
// the operator believes is on must not be silently off.
func olderRateLimitKey(raw map[string]any) string {
	for _, p := range [][2]string{{"", "rateLimiterRate"}, {"run", "rateLimiterRate"}, {"httpServer", "rateLimiterRate"},
		{"http", "rateLimitPatterns"}, {"http", "rateLimitRate"}, {"http", "rateLimiterRate"}} {
		m := raw
		if p[0] != "" {
			m, _ = raw[p[0]].(map[string]any)
		}
		if _, ok := m[p[1]]; ok {
			return strings.TrimPrefix(p[0]+"."+p[1], ".")
		}
	}
	return ""
}

// MetricsPath is the metrics endpoint: GET MetricsPath?key=<run.systemMetricsKey>.
const MetricsPath = "/etcha/v1/system/metrics"

// Webhook is the listener's Webhooker: the engine runs the sources.
func (r *runner) Webhook(ctx context.Context, w listen.Webhook) (listen.WebhookReply, error) {
	rep, err := r.engine.Webhook(ctx, source.WebhookRequest{
		Method: w.Method, Path: w.Path, RawQuery: w.RawQuery, Header: w.Header, Body: w.Body, RemoteAddr: w.RemoteAddr,
	})
	return listen.WebhookReply{Found: rep.Found, Body: rep.Body, ContentType: rep.ContentType}, err
}

// shutdown closes the engine: runs in progress get grace to finish, or
// until kill is closed.
func (r *runner) shutdown(grace time.Duration, kill <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() { // ends with shutdown: cancel closes ctx
		select {
		case <-kill:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := r.engine.Close(ctx); err != nil {
		r.a.logger().Warn("Runs still in progress after the grace period were stopped", "grace", grace)
	}
}

func (r *runner) close() {
	if r.etcd != nil {
		r.etcd.Close()
	}
}

// startup is step 4 for every source in name order, until stop ends. It
// returns the names of the sources that failed.
func (r *runner) startup(stop, work context.Context) []string {
	var failed []string
	for _, name := range r.engine.Names() {
		if stop.Err() != nil {
			break
		}
		if !r.pullAndRun(work, name, false) {
			failed = append(failed, name)
		}
	}
	return failed
}

// pullAndRun pulls the source (if it has pull paths) and runs its current
// pattern unless the pull's pattern already ran. tick marks a runFrequency
// tick, on which an unchanged pattern runs again. It reports whether the
// pull (if any) found a valid pattern and the run had no error.
func (r *runner) pullAndRun(ctx context.Context, name string, tick bool) bool {
	log := r.a.logger()
	ok, ran := true, false
	if paths := r.paths[name]; len(paths) > 0 {
		var last source.Result
		defer func() { r.firePull(name, last) }() // after the run, failed or not
		_, err := r.fetcher.First(ctx, paths, func(p pull.Path, jwt string) error {
			res, err := r.engine.Receive(ctx, name, jwt, source.Origin{Trigger: source.TriggerPull, Where: p.String(), Tick: tick})
			switch {
			case err != nil:
				return err
			case res.Status == source.StatusRefused:
				return res.Err
			}
			last = res
			return nil
		})
		if err != nil {
			if errors.Is(err, source.ErrClosed) {
				return false
			}
			log.Error("no valid targets for source "+name, "source", name, "err", err)
			ok = false
		}
		ran = last.Status == source.StatusRan
		ok = ok && last.Err == nil
	}
	if ran {
		return ok
	}
	o := source.Origin{}
	if tick {
		o = source.Origin{Trigger: source.TriggerPull, Tick: true}
	}
	res, err := r.engine.Run(ctx, name, o)
	if err != nil {
		if !errors.Is(err, source.ErrClosed) {
			log.Error("Run of source "+name+" failed", "source", name, "err", err)
		}
		return false
	}
	return ok && res.Err == nil
}

// follow starts step 5: a ticker per source with runFrequency and a watch
// per etcd:/// pull path, all ending with stop; wg owns their goroutines.
func (r *runner) follow(stop, work context.Context, wg *sync.WaitGroup) {
	c := r.a.config()
	for _, name := range r.engine.Names() {
		src := c.Sources[name]
		if src == nil {
			continue
		}
		if d := time.Duration(src.RunFrequency); d > 0 {
			wg.Go(func() { r.tick(stop, work, name, d) })
		}
		for _, p := range r.paths[name] {
			if p.Kind == pull.Etcd {
				m := newMailbox()
				wg.Go(func() { r.watch(stop, p, m) })
				wg.Go(func() { r.receiveWatched(stop, work, name, p, m) })
			}
		}
	}
}

func (r *runner) tick(stop, work context.Context, name string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop.Done():
			return
		case <-t.C:
			r.pullAndRun(work, name, true)
		}
	}
}

// watch follows an etcd:/// pull path and posts each event to m; the
// newest event replaces one not yet taken.
func (r *runner) watch(stop context.Context, p pull.Path, m *mailbox) {
	err := r.fetcher.Watch(stop, p, m.put)
	if err != nil && stop.Err() == nil {
		r.a.logger().Error("Watch of "+p.String()+" ended", "where", p.String(), "err", err)
	}
}

// receiveWatched hands each value of a watched key to the source, one at
// a time: a value that arrives while the previous one runs waits, and is
// replaced by a newer one (the newest pattern is the one that matters; an
// older one would be refused as a rollback anyway).
func (r *runner) receiveWatched(stop, work context.Context, name string, p pull.Path, m *mailbox) {
	log := r.a.logger().With("source", name, "where", p.String())
	for {
		select {
		case <-stop.Done():
			return
		case <-m.ready:
		}
		ev := m.take()
		switch {
		case ev.Err != nil:
			log.Error("Value of the watched etcd key not taken", "rev", ev.Rev, "err", ev.Err)
		case ev.Deleted:
			log.Warn("Watched etcd key is absent; the source keeps its current pattern (removing its work takes a new signed pattern)", "rev", ev.Rev, "cause", ev.Cause)
		default:
			res, err := r.engine.Receive(work, name, ev.Value, source.Origin{Trigger: source.TriggerPull, Where: p.String()})
			if err != nil && !errors.Is(err, source.ErrClosed) {
				log.Error("Watched value not received", "rev", ev.Rev, "err", err)
			}
			r.firePull(name, res)
		}
	}
}

// firePull fires the pull system event after a pull attempt of name (spec
// §4.3), whatever its outcome; res is the last result, for the key ID.
func (r *runner) firePull(name string, res source.Result) {
	r.engine.Fire(source.Event{Name: "pull", Source: name, PublicKey: res.PublicKey})
}

// mailbox holds the newest event not yet taken.
type mailbox struct {
	ready chan struct{}
	mu    sync.Mutex
	ev    pull.Event
}

func newMailbox() *mailbox { return &mailbox{ready: make(chan struct{}, 1)} }

func (m *mailbox) put(ev pull.Event) {
	m.mu.Lock()
	m.ev = ev
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() pull.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ev
}

// push is the listener's Pusher (spec §4.8): 404 for an unknown source,
// a source without allowPush, or a refused JWT.
func (r *runner) push(ctx context.Context, p listen.Push) (listen.Result, error) {
	src, ok := r.a.config().Sources[p.Source]
	switch {
	case !ok:
		return listen.Result{}, fmt.Errorf("%w: source %q is not configured", listen.ErrNotFound, p.Source)
	case src == nil || !src.AllowPush:
		return listen.Result{}, fmt.Errorf("%w: source %q does not set allowPush", listen.ErrNotFound, p.Source)
	}
	res, err := r.engine.Receive(ctx, p.Source, p.JWT, source.Origin{
		Trigger: source.TriggerPush, Where: p.RemoteAddr, Check: p.Check, ParentIDs: p.ParentIDs,
	})
	if _, unknown := errors.AsType[*source.UnknownSourceError](err); unknown {
		return listen.Result{}, fmt.Errorf("%w: %v", listen.ErrNotFound, err)
	}
	if err != nil {
		return listen.Result{}, err
	}
	if res.Status == source.StatusRefused {
		return listen.Result{}, fmt.Errorf("%w: source %q refused the JWT (%s): %v", listen.ErrNotFound, p.Source, res.Reason, res.Err)
	}
	// A verified push, failed or not (spec §4.8); a refused one fires
	// nothing, so that nobody can trigger receivers without a key.
	r.engine.Fire(source.Event{Name: "push", Source: p.Source, PublicKey: res.PublicKey, RemoteAddr: p.RemoteAddr})
	out := listen.Result{Changed: res.Changed, Removed: res.Removed, Exit: res.Exit, Output: res.Output}
	if res.Err != nil {
		out.Err = res.Err.Error()
	}
	return out, nil
}

// onResult logs every pull and push with its iat and jti, and feeds the
// metrics. (The engine prints the output of etcha:stdout events itself.)
func (r *runner) onResult(name string, o source.Origin, res source.Result) {
	RecordResult(r.metrics, name, o, res)
	if o.Trigger == source.TriggerPull || o.Trigger == source.TriggerPush {
		attrs := []any{"source", name, "where", o.Where, "status", res.Status, "tick", o.Tick, "check", o.Check, "jti", res.JTI}
		if !res.IssuedAt.IsZero() {
			attrs = append(attrs, "iat", res.IssuedAt.UTC().Format(time.RFC3339))
		}
		if res.Reason != "" {
			attrs = append(attrs, "reason", res.Reason)
		}
		if res.Err != nil {
			attrs = append(attrs, "err", res.Err)
		}
		r.a.logger().Info(string(o.Trigger), attrs...)
	}
}
