package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/etcha"
	"github.com/dispenser-dev/dispenser/internal/source"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// Patterns configure signed patterns from etcd (dispenser --patterns).
// Every key under Prefix holds one JWT; its path below Prefix is the
// source name. They run on the engine of `etcha run`, events included
// (sources.<name>.eventsSend and eventsReceive route them), except that
// etcha:reload signals the child and etcha:exit is ignored.
type Patterns struct {
	// Prefix is the etcd prefix of the pattern keys, ending in "/". It
	// must not be a prefix of Options.Prefix, nor the other way round.
	// Both are followed in one watch over the key range that covers them,
	// so they should be close (e.g. /app/files/ and /app/patterns/).
	Prefix string
	// App is the etcha configuration (--etcha-config): its exec, vars,
	// run.jwtRule and run.verifyKeys apply, and sources.<name> applies to
	// the key of that name. Required.
	App *etcha.App
	// VerifyKeys are appended to the configuration's run.verifyKeys.
	VerifyKeys token.PublicKeys
	// StateDir keeps the last accepted JWT of each pattern; it is created
	// if missing. "" keeps them in memory only, so a restart runs the
	// current patterns again without removals.
	StateDir string
}

// startPatterns builds the engine. The returned function closes it (runs
// in progress get KillTimeout) and removes a temporary state directory.
func (d *Daemon) startPatterns(ctx context.Context) (stop func(), err error) {
	p := d.opts.Patterns
	if p.Prefix == "" || strings.HasPrefix(p.Prefix, d.opts.Prefix) || strings.HasPrefix(d.opts.Prefix, p.Prefix) {
		return nil, fmt.Errorf("patterns prefix %q and files prefix %q overlap; use two separate prefixes", p.Prefix, d.opts.Prefix)
	}
	if p.App.Config != nil {
		for _, n := range slices.Sorted(maps.Keys(p.App.Config.Sources)) {
			sc := p.App.Config.Sources[n]
			switch {
			case sc == nil:
			case slices.Contains(sc.EventsReceive, "reload"):
				return nil, fmt.Errorf("--etcha-config: sources.%s.eventsReceive lists reload, but in dispenser etcha:reload signals the child and reaches no source; remove it", n)
			case slices.Contains(sc.EventsReceive, "exit"):
				return nil, fmt.Errorf("--etcha-config: sources.%s.eventsReceive lists exit, but etcha:exit has no effect in dispenser (it never exits for it); remove it", n)
			}
		}
	}
	if p.StateDir != "" {
		if err := os.MkdirAll(p.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("--state-dir: %w; point it at a directory dispenser can create and write", err)
		}
	}
	e, err := p.App.NewEngine(ctx, etcha.EngineOptions{StateDir: p.StateDir, NoState: p.StateDir == "",
		VerifyKeys: p.VerifyKeys, OnResult: d.patternResult})
	if err != nil {
		return nil, fmt.Errorf("patterns: %w", err)
	}
	d.engine = e
	d.sources, d.present = map[string]bool{}, map[string]bool{}
	for _, n := range e.Names() {
		d.sources[n] = true
	}
	return func() { d.closeEngine(nil) }, nil
}

// closeEngine closes the engine: runs in progress get KillTimeout, or end
// at once when skip is closed (a second stop signal).
func (d *Daemon) closeEngine(skip <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.KillTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if skip != nil {
		wg.Go(func() {
			select {
			case <-skip:
				cancel()
			case <-ctx.Done():
			}
		})
	}
	if err := d.engine.Close(ctx); err != nil {
		d.log.Warn("pattern runs cancelled: they did not finish within --kill-timeout", "kill_timeout", d.opts.KillTimeout)
	}
	cancel()
	wg.Wait()
}

// patternResult is the engine's OnResult, called for the runs that
// runPattern starts (trigger pull) and for the event runs the engine
// dispatches on its own goroutine (trigger event). It counts each result
// in the dispenser_pattern_* and the etcha_* metrics. An event run that
// fired etcha:reload asks the daemon loop for a reload signal through
// eventReload (runPattern reports its own runs' reloads); requests not
// yet taken merge into one. etcha:exit is logged and ignored: dispenser
// supervises the child, and a pattern never stops it.
func (d *Daemon) patternResult(name string, o source.Origin, r source.Result) {
	etcha.RecordResult(d.etcha, name, o, r)
	if r.Exit {
		d.log.Warn("etcha:exit has no effect in dispenser; it keeps running with its child (stop it with SIGTERM)",
			"pattern", name, "trigger", o.Trigger)
	}
	if o.Trigger != source.TriggerPull && fired(r, "reload") {
		select {
		case d.eventReload <- struct{}{}:
		default: // one is pending already
		}
	}
	if r.Err != nil { // refused, or a command failed
		d.patternFailures.Add(1)
	}
	switch r.Status {
	case source.StatusRefused:
		d.metrics.PatternRefused(name, string(r.Reason))
		return
	case source.StatusRan:
		d.metrics.PatternRan(name, r.Err != nil)
	}
	if !r.IssuedAt.IsZero() && r.Status != source.StatusSkipped {
		d.metrics.PatternAccepted(name, r.IssuedAt)
	}
}

// eventReloaded takes a pending reload request of an event run, if any.
func (d *Daemon) eventReloaded() bool {
	select {
	case <-d.eventReload:
		return true
	default:
		return false
	}
}

// fired reports whether a command of r's run fired etcha:<event>.
func fired(r source.Result, event string) bool {
	return slices.ContainsFunc(r.Events, func(ev command.Event) bool { return ev.Name == event })
}

// runPatterns runs the pattern changes in p, in name order, and reports
// whether a command fired etcha:reload. At start-up (startup) a pattern
// equal to the restored one runs once anyway. A failing pattern is logged
// and counted and never stops the others. Signals are handled while the
// patterns run: others are forwarded; a stop lets the run in progress
// finish within KillTimeout (a second stop ends it at once), runs no more
// patterns and is returned.
func (d *Daemon) runPatterns(ctx context.Context, p *pending, startup bool) (reload bool, stop os.Signal) {
	changes, reset := p.takePatterns()
	if d.engine == nil || (len(changes) == 0 && !reset) {
		return false, nil
	}
	var names []string
	for _, n := range slices.Sorted(maps.Keys(changes)) {
		if !utf8.ValidString(n) { // not a name anyone signed for; it would also break the metrics labels
			d.log.Error("pattern key ignored: its name is not valid UTF-8; rename the key",
				"key", strings.ToValidUTF8(d.opts.Patterns.Prefix+n, "\uFFFD"))
			delete(changes, n)
			continue
		}
		if changes[n].deleted {
			d.log.Warn("pattern key deleted; the pattern stays current (removing its work takes a new signed pattern)",
				"pattern", n, "key", d.opts.Patterns.Prefix+n)
			continue
		}
		names = append(names, n)
	}
	if reset {
		for _, n := range slices.Sorted(maps.Keys(d.present)) {
			if _, ok := changes[n]; !ok {
				d.log.Warn("pattern key gone; the pattern stays current (removing its work takes a new signed pattern)",
					"pattern", n, "key", d.opts.Patterns.Prefix+n)
			}
		}
		d.present = map[string]bool{}
	}
	for n, c := range changes {
		if c.deleted {
			delete(d.present, n)
		} else {
			d.present[n] = true
		}
	}
	for _, n := range names {
		if !d.sources[n] {
			if err := d.engine.Add(ctx, source.Config{Name: n, NoRestore: d.opts.Patterns.StateDir == ""}); err != nil {
				d.log.Error("pattern not registered", "pattern", n, "err", err)
				continue
			}
			d.sources[n] = true
		}
	}

	// A stop does not cancel the run in progress: closing the engine gives
	// it KillTimeout. halt only keeps further patterns from starting.
	runCtx, halt := context.WithoutCancel(ctx), make(chan struct{})
	done := make(chan bool, 1)
	go func() { // owned: runPatterns waits for done on every path
		reload := false
	names:
		for _, n := range names {
			select {
			case <-halt:
				break names
			default:
			}
			reload = d.runPattern(runCtx, n, changes[n].jwt, startup) || reload
		}
		done <- reload
	}()
	var skip chan struct{} // closed by a second stop
	ctxDone := ctx.Done()  // nil once seen: a done context stays done
	for {
		var s os.Signal
		select {
		case reload := <-done:
			return reload, stop
		case s = <-d.stops:
			if !d.isStop(s) {
				continue
			}
		case s := <-d.sigs:
			d.forward(s)
			continue
		case <-ctxDone:
			ctxDone = nil
			if stop != nil {
				continue
			}
			s = syscall.SIGTERM
		}
		if stop != nil {
			select {
			case <-skip: // a third stop: the run is being cancelled already
			default:
				d.log.Warn("second stop signal: cancelling the pattern run now", "signal", s)
				close(skip)
			}
			continue
		}
		stop, skip = s, make(chan struct{})
		d.log.Info("stop asked for while patterns run; the run in progress gets --kill-timeout", "signal", s,
			"kill_timeout", d.opts.KillTimeout)
		close(halt)
		closed := make(chan struct{})
		go func() { defer close(closed); d.closeEngine(skip) }()
		defer func() { <-closed }()
	}
}

// waitEvents waits until the events that the pattern runs fired are
// dispatched and the runs they caused have finished, as `etcha run -o`
// does: --once exits after them, so an event chain completes before an
// init container ends. Signals are handled meanwhile: others are
// forwarded, and a stop ends the wait and is returned (closing the engine
// then gives the run in progress --kill-timeout).
func (d *Daemon) waitEvents(ctx context.Context) os.Signal {
	idleCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // owned: waited for below on every path
		defer close(done)
		_ = d.engine.Idle(idleCtx) // an error is idleCtx's end: cancel below, or ctx's
	}()
	defer func() { cancel(); <-done }()
	for {
		select {
		case <-done:
			return nil
		case s := <-d.stops:
			if d.isStop(s) {
				return s
			}
		case s := <-d.sigs:
			d.forward(s)
		case <-ctx.Done():
			return syscall.SIGTERM
		}
	}
}

// runPattern hands one pattern's JWT to the engine and reports whether a
// command fired etcha:reload.
func (d *Daemon) runPattern(ctx context.Context, name, jwt string, startup bool) bool {
	o := source.Origin{Trigger: source.TriggerPull, Where: d.opts.Patterns.Prefix + name}
	r, err := d.engine.Receive(ctx, name, jwt, o)
	if err == nil && startup && (r.Status == source.StatusUnchanged || r.Status == source.StatusRefused) {
		// At start every pattern runs once: the restored one when etcd
		// holds the same JWT, or one that is refused (forged, replayed).
		r, err = d.engine.Run(ctx, name, o)
	}
	if err != nil {
		if !errors.Is(err, source.ErrClosed) {
			d.log.Error("pattern not run", "pattern", name, "err", err)
		}
		return false
	}
	return fired(r, "reload")
}
