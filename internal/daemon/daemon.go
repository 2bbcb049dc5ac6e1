package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/metrics"
	"github.com/dispenser-dev/dispenser/internal/source"
	"github.com/dispenser-dev/dispenser/internal/supervisor"
	"github.com/dispenser-dev/dispenser/internal/watch"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// owned lists the processes this program starts and waits for itself
// (pattern commands), so the reaper leaves them alone. It is process-wide,
// as reaping is.
var owned supervisor.Owned

// Options configure a Daemon. Writer, Signals and Logger are required.
type Options struct {
	// Prefix is the etcd prefix of the files, ending in "/".
	Prefix string
	// Target is the directory Writer writes to, for logs and errors.
	Target string
	// Writer writes the files; it was created for Target and Prefix.
	Writer *writer.Writer
	// Signal is sent to the child after a change; 0 sends none.
	Signal syscall.Signal
	// Once writes the first complete snapshot and returns.
	Once bool
	// WaitMin and WaitMax are --wait: write after WaitMin of quiet, at
	// most WaitMax after a burst began. WaitMin 0 writes every batch.
	WaitMin, WaitMax time.Duration
	// KillTimeout is how long the child gets after a stop signal.
	KillTimeout time.Duration
	// Reap reaps orphaned zombies (always on as PID 1).
	Reap bool
	// RunAs, if set, is the child's user and groups.
	RunAs *syscall.Credential
	// Argv is the child; empty runs no child (sidecar mode).
	Argv []string
	// WatchProbe is the watch's progress-request interval; 0 is off.
	WatchProbe time.Duration
	// InitialTimeout bounds connecting and the first complete sync,
	// counted from New; 0 waits forever.
	InitialTimeout time.Duration
	// Stdout and Stderr are the child's.
	Stdout, Stderr io.Writer
	// Logger receives the daemon's logs.
	Logger *slog.Logger
	// Signals delivers the signals the daemon acts on; see Subscribe.
	Signals *Signals
	// Metrics, if set, is updated; nil makes a private one. With Patterns,
	// the etcha_* metrics are registered on its registry, so it can serve
	// one such Daemon only.
	Metrics *metrics.Metrics
	// Patterns, if set, runs signed patterns from etcd keys.
	Patterns *Patterns
}

// Daemon is the loop that ties the parts together: batches from the
// watcher go to the writer; a batch that changed files makes exactly one
// signal to the child; signals to dispenser go to the child. Everything
// happens on one goroutine, so a write is never interrupted by a signal.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	writer  *writer.Writer
	watcher *watch.Watcher
	client  *clientv3.Client
	metrics *metrics.Metrics
	giveUp  <-chan time.Time // fires at InitialTimeout; nil when off
	stdout  io.Writer
	stderr  io.Writer

	patternFailures atomic.Int64 // pattern results with an error (refused or failed), for Once

	connected  atomic.Bool           // watcher is set: the etcd client exists
	connectErr atomic.Pointer[error] // the last failed attempt to connect
	ready      atomic.Bool           // the first full sync is on disk
	writeErr   atomic.Pointer[error] // the last write's error; nil after a success
	child      *supervisor.Child
	childStart time.Time        // when the child was started
	reload     <-chan time.Time // a reload held back by startGrace; nil when none
	rejected   map[string]bool  // keys rejected by the last write, counted already
	needResync bool             // the failed write needs the whole prefix read again
	pageBegan  time.Time        // when the first page of the paged snapshot under way came
	stopWatch  func()           // stops the watcher goroutine and waits for it
	batches    chan watch.Batch // where the watcher sends
	failures   int              // consecutive failed writes, for the retry backoff
	retryIn    time.Duration    // backoff after the last failed write
	wantRev    int64            // etcd revision of the newest batch taken
	stops      <-chan os.Signal // SIGTERM, SIGINT, SIGQUIT (see stopSignals)
	sigs       <-chan os.Signal // every other signal to forward to the child

	engine      *source.Engine  // nil without Patterns
	sources     map[string]bool // names registered in engine
	present     map[string]bool // names with a pattern key in etcd
	etcha       *metrics.Etcha  // etcha_* metrics of the pattern runs; nil without Patterns
	eventReload chan struct{}   // buffered 1: an event run fired etcha:reload (see patternResult)
}

// New returns a Daemon for opts. The InitialTimeout starts now.
func New(opts Options) *Daemon {
	d := &Daemon{
		opts:    opts,
		log:     opts.Logger,
		writer:  opts.Writer,
		metrics: opts.Metrics,
		stdout:  opts.Stdout,
		stderr:  opts.Stderr,
		stops:   opts.Signals.stops,
		sigs:    opts.Signals.others,
	}
	if d.metrics == nil {
		d.metrics = metrics.New()
	}
	if opts.Patterns != nil {
		d.etcha = metrics.NewEtcha(d.metrics.Registry())
		d.eventReload = make(chan struct{}, 1)
	}
	if opts.InitialTimeout > 0 {
		d.giveUp = time.After(opts.InitialTimeout)
	}
	return d
}

// Metrics returns the metrics the daemon updates.
func (d *Daemon) Metrics() *metrics.Metrics { return d.metrics }

// Ready reports whether the first full sync is on disk.
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Run drives the daemon with a ready etcd client (see Connect) until the
// child exits or a stop is asked for. It returns the child's
// *supervisor.ExitError when the child failed, and nil for a clean stop.
func (d *Daemon) Run(ctx context.Context, client *clientv3.Client) error {
	// Pattern commands are children of this process too: the reaper (as
	// PID 1 or with Reap) must leave the ones os/exec waits for alone.
	command.SetStartHook(owned.Start)
	wopts := watch.Options{
		Client:           client,
		Prefix:           d.opts.Prefix,
		ProgressInterval: d.opts.WatchProbe,
		Logger:           d.log,
		PagedResets:      true, // each page is written as it arrives (see page)
	}
	if d.opts.Patterns != nil {
		wopts.Also = []string{d.opts.Patterns.Prefix}
		stopPatterns, err := d.startPatterns(ctx)
		if err != nil {
			return err
		}
		defer stopPatterns()
	}
	d.watcher = watch.New(wopts)
	d.client = client
	d.connected.Store(true)
	return d.run(ctx)
}

// run drives the daemon until the child exits or a stop is asked for.
//  1. Start the watcher.
//  2. Write the first complete snapshot (retrying until it succeeds), then
//     run every pattern once.
//  3. With Once, stop there. Otherwise start the child.
//  4. Apply batches and forward signals until the child exits or SIGTERM,
//     SIGINT or ctx's end asks us to stop.
func (d *Daemon) run(ctx context.Context) error {
	batches := make(chan watch.Batch)
	d.startWatch(ctx, batches) // (1)
	connCtx, stopConn := context.WithCancel(ctx)
	connDone := make(chan struct{})
	go func() {
		defer close(connDone)
		d.followConn(connCtx, d.client.ActiveConnection(), d.client.Endpoints())
	}()
	stop := func() { d.stopWatch(); stopConn(); <-connDone }
	defer stop()

	sig, err := d.firstSync(ctx, batches) // (2)
	if err != nil || sig != nil {
		return err
	}
	if d.opts.Once { // (3)
		return nil
	}
	if len(d.opts.Argv) > 0 {
		d.eventReloaded() // a reload from before the child exists: it reads the newest state at start
		if err := d.startChild(); err != nil {
			return err
		}
	}
	sig = d.loop(ctx, batches) // (4)
	stop()                     // no write is in flight here: the loop does them
	d.log.Info("stopped watching etcd")
	return d.stopChild(sig)
}

// startWatch runs the watcher on its own goroutine, sending on batches,
// and sets d.stopWatch, which stops it and waits for it.
func (d *Daemon) startWatch(ctx context.Context, batches chan watch.Batch) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	d.batches = batches
	go func() {
		defer close(done)
		d.watcher.Run(ctx, batches)
	}()
	d.stopWatch = func() { cancel(); <-done }
}

// resync restarts the watcher, so that it reads the whole prefix again:
// the writer needs it after a paged snapshot failed to be written, since
// it never held the snapshot's values, or when it found a file it wrote
// damaged ([writer.ErrResync]).
func (d *Daemon) resync(ctx context.Context) {
	d.needResync = false
	d.log.Info("reading the whole prefix again to retry the failed write", "dir", d.opts.Target)
	d.stopWatch()
	d.startWatch(ctx, d.batches)
}

// startChild starts the child, giving it the terminal when dispenser has
// it. A command that cannot be run is a *supervisor.StartError (exit 126
// or 127).
func (d *Daemon) startChild() error {
	opts := supervisor.Options{
		Argv:        d.opts.Argv,
		Stdin:       os.Stdin,
		Stdout:      d.stdout,
		Stderr:      d.stderr,
		KillTimeout: d.opts.KillTimeout,
		Reap:        d.opts.Reap || os.Getpid() == 1,
		Owned:       &owned,
		Credential:  d.opts.RunAs,
		Logger:      d.log,
	}
	if supervisor.Foreground(os.Stdin) {
		opts.Terminal = os.Stdin
	}
	child, err := supervisor.Start(opts)
	if err != nil {
		return err
	}
	d.child, d.childStart = child, time.Now()
	d.metrics.ChildStarted()
	return nil
}

// firstSync waits for the watcher's first snapshot, writes it and runs
// every pattern once. It returns a non-nil signal if a stop was asked for
// before that was done.
func (d *Daemon) firstSync(ctx context.Context, batches <-chan watch.Batch) (os.Signal, error) {
	var p pending
	var retry <-chan time.Time
	for {
		select {
		case b := <-batches:
			if s := d.take(ctx, &p, b, batches); s != nil {
				return d.stoppedBeforeSync(s), nil
			}
			if retry != nil {
				continue // a failed write is retried when its backoff ends
			}
		case <-d.giveUp:
			return nil, d.initialTimeout()
		case <-retry:
			retry = nil
			if d.needResync {
				d.resync(ctx)
				continue
			}
		case s := <-d.stops:
			return d.stoppedBeforeSync(s), nil
		case s := <-d.sigs:
			d.forward(s)
			continue
		case <-ctx.Done():
			return syscall.SIGTERM, nil
		}
		if p.paging || !p.reset && d.failures == 0 {
			continue // only a complete snapshot can be the first write
		}
		res, err := d.flush(&p)
		if err != nil {
			if d.opts.Once {
				return nil, fmt.Errorf("--once: write %s: %w", d.opts.Target, err)
			}
			retry = time.After(d.retryIn)
			continue
		}
		d.logUpdated(res)
		d.log.Info("target in sync", "dir", d.opts.Target)
		if _, s := d.runPatterns(ctx, &p, true); s != nil {
			return d.stoppedBeforeSync(s), nil
		}
		if d.opts.Once && d.engine != nil {
			if s := d.waitEvents(ctx); s != nil {
				return d.stoppedBeforeSync(s), nil
			}
		}
		if n := d.patternFailures.Load(); d.opts.Once && n > 0 {
			return nil, fmt.Errorf("--once: %d pattern(s) failed or were refused; the log says which and why", n)
		}
		d.ready.Store(true)
		return nil, nil
	}
}

func (d *Daemon) stoppedBeforeSync(s os.Signal) os.Signal {
	d.log.Info("stopping before the first sync completed", "signal", s)
	return s
}

// loop applies batches and forwards signals. It returns the signal to stop
// the child with: the SIGTERM or SIGINT received, SIGTERM when ctx ended,
// or nil when the child exited by itself. While writes fail, batches only
// add to what is pending: the next write is the retry at the end of the
// backoff.
func (d *Daemon) loop(ctx context.Context, batches <-chan watch.Batch) os.Signal {
	var (
		p           pending
		wait        = quiescence{min: d.opts.WaitMin, max: d.opts.WaitMax}
		retry       <-chan time.Time
		childExited <-chan struct{}
	)
	if d.child != nil {
		childExited = d.child.Done()
	}
	for {
		select {
		case b := <-batches:
			if s := d.take(ctx, &p, b, batches); s != nil {
				return d.stopOrExit(s)
			}
			if s := d.drain(ctx, &p, batches); s != nil {
				return d.stopOrExit(s)
			}
			if p.paging {
				continue // the rest of the snapshot comes first
			}
			var s os.Signal
			switch {
			case retry != nil && p.patterns == nil && !p.patternsReset: // backing off: the retry writes this too
			case retry != nil && d.opts.WaitMin == 0: // the retry writes the files; patterns run now
				s = d.patternsAndSignal(ctx, &p)
			case d.opts.WaitMin == 0:
				s = d.flushAndSignal(ctx, &p, &retry)
			default:
				wait.batch()
			}
			if s != nil {
				return s
			}
		case <-wait.quiet:
			wait.done()
			if s := d.flushOrPatterns(ctx, &p, &retry); s != nil {
				return s
			}
		case <-wait.maxed:
			wait.done()
			if s := d.flushOrPatterns(ctx, &p, &retry); s != nil {
				return s
			}
		case <-retry:
			retry = nil
			if d.needResync {
				d.resync(ctx)
				continue
			}
			wait.done()
			if s := d.flushAndSignal(ctx, &p, &retry); s != nil {
				return s
			}
		case <-d.reload:
			d.reload = nil
			d.signal()
		case <-d.eventReload: // nil without patterns
			d.reloadChild(true)
		case s := <-d.stops:
			if d.isStop(s) {
				return s
			}
		case s := <-d.sigs:
			d.forward(s)
		case <-ctx.Done():
			return syscall.SIGTERM
		case <-childExited:
			return nil
		}
	}
}

// stopOrExit turns take's interruption into loop's result.
func (d *Daemon) stopOrExit(s os.Signal) os.Signal {
	if s == errChildExited {
		return nil
	}
	d.log.Info("stop asked for during a catch-up; its batches are not written", "signal", s)
	return s
}

// flushAndSignal writes what is pending, runs the pending patterns, and
// signals the child once if any file visible to readers changed (even if
// part of the write failed) or a pattern command fired etcha:reload. A
// failed write schedules a retry after the backoff; the writer keeps the
// desired state, so the retry needs no batch. It returns a stop signal
// received while patterns ran.
func (d *Daemon) flushAndSignal(ctx context.Context, p *pending, retry *<-chan time.Time) os.Signal {
	if p.paging {
		return nil // a snapshot's pages are coming: its last one flushes
	}
	res, err := d.flush(p)
	*retry = nil
	if err != nil {
		*retry = time.After(d.retryIn)
	}
	reload, stop := d.runPatterns(ctx, p, false)
	if stop != nil {
		return stop
	}
	d.reloadChild(res.Changed || reload || d.eventReloaded())
	d.writer.Tidy() // after the signal: the child need not wait for it
	if err == nil {
		d.logUpdated(res) // after the signal too
	}
	return nil
}

// flushOrPatterns ends a --wait burst: it writes and runs the patterns,
// or, while a failed write backs off, only runs the patterns.
func (d *Daemon) flushOrPatterns(ctx context.Context, p *pending, retry *<-chan time.Time) os.Signal {
	if p.paging {
		return nil // a snapshot's pages are coming: its last one flushes
	}
	if *retry != nil {
		return d.patternsAndSignal(ctx, p)
	}
	return d.flushAndSignal(ctx, p, retry)
}

// patternsAndSignal runs the pending patterns while a failed write backs
// off (failing files never hold back patterns), and signals the child if
// one fired etcha:reload. It returns a stop signal received meanwhile.
func (d *Daemon) patternsAndSignal(ctx context.Context, p *pending) os.Signal {
	reload, stop := d.runPatterns(ctx, p, false)
	if stop != nil {
		return stop
	}
	d.reloadChild(reload || d.eventReloaded())
	return nil
}

// reloadChild sends the child its reload signal if changed, once: held
// back (and merged) while the child is starting.
func (d *Daemon) reloadChild(changed bool) {
	if !changed || d.child == nil || d.opts.Signal == 0 {
		return
	}
	if early := startGrace - time.Since(d.childStart); early > 0 {
		if d.reload == nil {
			d.log.Info("files or patterns changed while the child is starting; holding its reload signal", "for", early.Round(time.Millisecond))
			d.reload = time.After(early)
		}
		return
	}
	d.signal()
}

// startGrace is how long after starting the child reload signals are held
// back (and merged into one): a child that has not installed its handler
// yet would be killed by a SIGHUP. What it reads at start-up is the newest
// state anyway; the held signal makes sure it sees later changes too.
const startGrace = 2 * time.Second

// signal sends the reload signal to the child.
func (d *Daemon) signal() {
	if err := d.child.Signal(d.opts.Signal); err != nil {
		d.log.Warn("files changed but the child could not be signalled", "signal", d.opts.Signal, "err", err)
		return
	}
	d.metrics.Signalled()
	d.log.Debug("signalled child", "signal", d.opts.Signal, "pid", d.child.Pid()) // logUpdated says it at info, just after
}

// flush hands the pending changes to the writer and resets p. Its
// Result's Changed reports whether any file visible to readers changed,
// which a failed write may also have done. After a failure, d.retryIn is
// the backoff. A successful write is logged by logUpdated, which the
// caller calls once the child has its signal.
func (d *Daemon) flush(p *pending) (writer.Result, error) {
	var res writer.Result
	var err error
	began := time.Now()
	paged := p.reset && p.full == nil
	switch {
	case paged: // written page by page as it came; then what came after it
		res, err, began = p.synced, p.syncErr, d.pageBegan
		if err == nil && len(p.changes) > 0 {
			var more writer.Result
			more, err = d.writer.Apply(p.list())
			res = writer.Result{Changed: res.Changed || more.Changed, Written: res.Written + more.Written,
				Removed: res.Removed + more.Removed, Rejected: more.Rejected}
		}
	case p.reset:
		res, err = d.writer.Sync(p.full)
	default:
		res, err = d.writer.Apply(p.list())
	}
	p.takeFiles()
	d.countRejections(res.Rejected)
	if err != nil {
		d.needResync = paged || errors.Is(err, writer.ErrResync)
		d.failures++
		d.retryIn = d.backoff()
		d.writeErr.Store(&err)
		d.metrics.WriteFailed()
		d.log.Error("write failed; the previous files stay in place and the write is retried",
			"dir", d.opts.Target, "rev", d.wantRev, "err", err, "failures", d.failures, "retry_in", d.retryIn.Round(time.Millisecond))
		return res, err
	}
	d.failures = 0
	d.writeErr.Store(nil)
	d.metrics.Applied(d.wantRev, res.Written, res.Removed, time.Since(began))
	return res, nil
}

// logUpdated logs a successful write that changed files, at info.
func (d *Daemon) logUpdated(res writer.Result) {
	if res.Changed {
		d.log.Info("files updated", "rev", d.wantRev, "written", res.Written, "removed", res.Removed)
	}
}

// countRejections counts each key once when it becomes rejected; the
// writer logs it.
func (d *Daemon) countRejections(rs []writer.Rejection) {
	now := make(map[string]bool, len(rs))
	for _, r := range rs {
		now[r.Key] = true
		if !d.rejected[r.Key] {
			d.metrics.Rejected(r.Reason)
		}
	}
	d.rejected = now
}

// backoff is the delay before retrying a failed write: 1s doubling to 30s,
// with jitter.
func (d *Daemon) backoff() time.Duration {
	b := time.Second << min(d.failures-1, 5)
	b = min(b, 30*time.Second)
	return b/2 + rand.N(b/2+1)
}

// forward passes a signal to the child. A terminal job-control signal
// (SIGTSTP, SIGTTIN, SIGTTOU) then suspends dispenser too, as the shell
// expects of a job; the SIGCONT that resumes it is forwarded in turn.
func (d *Daemon) forward(s os.Signal) {
	if d.child == nil {
		d.log.Info("ignoring signal: no child to forward it to yet", "signal", s)
		return
	}
	sig := s.(syscall.Signal)
	if err := d.child.Signal(sig); err != nil {
		d.log.Warn("forward signal to child", "signal", s, "err", err)
		return
	}
	d.log.Debug("forwarded signal", "signal", supervisor.SignalString(sig), "pid", d.child.Pid())
	if sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU {
		d.log.Debug("suspending after a job-control signal", "signal", s)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	}
}

// stopChild forwards the stop signal to the child and waits for it; the
// supervisor SIGKILLs it after --kill-timeout, and a second SIGTERM or
// SIGINT kills its whole process group at once. It returns the child's
// exit.
func (d *Daemon) stopChild(sig os.Signal) error {
	if d.child == nil {
		d.log.Info("stopped", "signal", sig)
		return nil
	}
	if sig == nil { // the child exited by itself
		return d.childExit(d.child.Wait())
	}
	d.log.Info("stopping child", "signal", sig, "pid", d.child.Pid(), "kill_timeout", d.opts.KillTimeout)
	stopped := make(chan error, 1)
	go func() { stopped <- d.child.Stop(sig.(syscall.Signal)) }()
	for {
		select {
		case err := <-stopped:
			return d.childExit(err)
		case s := <-d.stops:
			if d.isStop(s) {
				d.log.Warn("second stop signal: killing the child's process group now", "signal", s)
				d.child.Kill()
			}
		case s := <-d.sigs:
			d.forward(s)
		}
	}
}

func (d *Daemon) childExit(err error) error {
	var exit *supervisor.ExitError
	switch {
	case err == nil:
		d.metrics.ChildExited(0)
		d.log.Info("child exited", "status", 0)
	case errors.As(err, &exit):
		d.metrics.ChildExited(exit.ExitCode())
		d.log.Info("child exited", "status", exit.ExitCode(), "err", err)
	default:
		d.log.Error("wait for child", "err", err)
	}
	return err
}

// errChildExited is take's answer when the child exited during a catch-up.
var errChildExited os.Signal = syscall.Signal(0)

// take adds a batch from the watcher to p, and the batches that etcd
// delivered together with it (b.More), so that a catch-up after a
// reconnect becomes one write and one signal. Between batches it forwards
// signals. It returns nil once the catch-up is in p; a stop signal (SIGTERM
// when ctx ends) or errChildExited if it was interrupted, and then p must
// not be written.
func (d *Daemon) take(ctx context.Context, p *pending, b watch.Batch, batches <-chan watch.Batch) os.Signal {
	var childExited <-chan struct{}
	if d.child != nil {
		childExited = d.child.Done()
	}
	var timeout *time.Timer // only for a catch-up: a single batch costs no timer
	for {
		d.add(p, b)
		if !b.More {
			return nil
		}
		if timeout == nil {
			timeout = time.NewTimer(catchUpWait)
			defer timeout.Stop()
		} else {
			timeout.Reset(catchUpWait)
		}
	next:
		select {
		case b = <-batches:
		case <-timeout.C: // a full chunk that was the last one
			return nil
		case s := <-d.stops:
			if d.isStop(s) {
				return s
			}
			goto next
		case s := <-d.sigs:
			d.forward(s)
			goto next
		case <-ctx.Done():
			return syscall.SIGTERM
		case <-childExited:
			return errChildExited
		}
	}
}

// catchUpWait bounds the wait for the next chunk of a catch-up; etcd sends
// one every 100 ms while a watcher is behind.
const catchUpWait = time.Second

func (d *Daemon) add(p *pending, b watch.Batch) {
	d.wantRev = b.Rev
	cause := ""
	if b.Reset {
		cause = watch.CauseKind(b.Cause)
		if cause != watch.CauseInitial && b.Page == 0 {
			d.log.Info("full resync from etcd", "rev", b.Rev, "cause", b.Cause)
		}
	}
	prefix := ""
	if d.opts.Patterns != nil {
		prefix = d.opts.Patterns.Prefix
	}
	if b.Reset { // Options.PagedResets: every snapshot comes in pages
		d.page(p, b, prefix)
		return
	}
	d.metrics.Received(b.Rev, cause)
	p.add(b, prefix)
}

// page writes one page of a paged snapshot at once, so that the
// snapshot's values are never all in memory: the writer builds the next
// state from the pages and commits it with the last one (in the atomic
// layout nothing is visible before). The result waits in p for flush,
// which signals. After a failed page the rest of the snapshot is only
// counted; flush then reports the error and the retry reads the prefix
// again.
func (d *Daemon) page(p *pending, b watch.Batch, prefix string) {
	if b.Page == 0 {
		d.pageBegan = time.Now()
	}
	files := p.addPage(b, prefix)
	if !b.Partial {
		d.metrics.Received(b.Rev, watch.CauseKind(b.Cause))
	}
	if b.Page > 0 && p.syncErr != nil {
		return
	}
	res, err := d.writer.SyncPage(files, b.Page == 0, !b.Partial)
	if err != nil {
		p.syncErr = err
	}
	p.synced = res
}

// drain takes every batch that is ready without waiting, so a burst (a
// catch-up after a reconnect) becomes one write and one signal. It returns
// what interrupted a catch-up, as take does.
func (d *Daemon) drain(ctx context.Context, p *pending, batches <-chan watch.Batch) os.Signal {
	for {
		select {
		case b := <-batches:
			if s := d.take(ctx, p, b, batches); s != nil {
				return s
			}
		default:
			return nil
		}
	}
}

// Health is nil while dispenser is connected to etcd, has heard from it
// recently, and its last write succeeded; otherwise it says what is wrong.
func (d *Daemon) Health() error {
	if err := d.writeErr.Load(); err != nil {
		return fmt.Errorf("the last write to %s failed: %v", d.opts.Target, *err)
	}
	if !d.connected.Load() {
		last := "none"
		if err := d.connectErr.Load(); err != nil {
			last = (*err).Error()
		}
		return fmt.Errorf("connecting to etcd (last error: %s)", last)
	}
	if err := connHealth(d.client.ActiveConnection()); err != nil {
		return err
	}
	st := d.watcher.Status()
	if !st.Connected {
		return fmt.Errorf("not watching etcd (last error: %s)", orNone(st.LastError))
	}
	if d.opts.WatchProbe > 0 {
		limit := 3 * d.opts.WatchProbe
		if quiet := time.Since(st.LastHeard); quiet > limit {
			return fmt.Errorf("no word from etcd for %v, more than 3 --watch-probe intervals (last error: %s)",
				quiet.Round(time.Second), orNone(st.LastError))
		}
	}
	return nil
}

func (d *Daemon) initialTimeout() error {
	last := d.watcher.Status().LastError
	if err := connHealth(d.client.ActiveConnection()); err != nil && last == "" {
		last = err.Error()
	}
	if err := d.writeErr.Load(); err != nil {
		last = (*err).Error()
	}
	return fmt.Errorf("no complete sync of %s to %s within --initial-timeout=%v (last error: %s); check ETCD_ENDPOINTS, that etcd is up and that the target is writable",
		d.opts.Prefix, d.opts.Target, d.opts.InitialTimeout, orNone(last))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// stopSignals stop dispenser: all three before the child exists; SIGTERM
// and SIGINT after. They have their own channel, read even while a burst
// of other signals fills the forwarding one.
func stopSignals() []os.Signal {
	return []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}
}

// isStop reports whether s, received on the stop channel, stops dispenser.
// Once the child runs, SIGQUIT is the child's to interpret (a graceful
// stop for nginx, a thread dump for a JVM): it is forwarded, and dispenser
// exits when the child does.
func (d *Daemon) isStop(s os.Signal) bool {
	if s == syscall.SIGQUIT && d.child != nil {
		d.forward(s)
		return false
	}
	return true
}
