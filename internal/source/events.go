package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// Event is one event to dispatch (spec §4.6 payload).
type Event struct {
	Name       string // without "etcha:"
	Source     string // the sending source
	ID         string // id of the emitting command ("" for pull/push/shell system events)
	Output     string // the emitting command's change/remove output
	PublicKey  string // key ID that verified the sender's JWT (or the shell request)
	RemoteAddr string // client address of the push/shell behind it, "" otherwise
}

// env is the ETCHA_EVENT_* environment of a receiver's run (spec §2.7).
func (ev Event) env() map[string]string {
	return map[string]string{
		"ETCHA_EVENT_ID":         ev.ID,
		"ETCHA_EVENT_NAME":       ev.Name,
		"ETCHA_EVENT_OUTPUT":     ev.Output,
		"ETCHA_EVENT_PUBLIC_KEY": ev.PublicKey,
		"ETCHA_EVENT_SRC":        ev.RemoteAddr,
	}
}

// internalEvent reports whether name is a system event whose effect is
// internal (spec §4.6 table): it never goes to other sources as such.
// exit is dispatched, but by the engine and ungated (see queueEvents).
func internalEvent(name string) bool {
	switch name {
	case "buildManifest", "jwt", "webhookBody", "webhookContentType", "stdout", "exit":
		return true
	}
	return strings.HasPrefix(name, "runVar_")
}

// Fire queues a system event (pull, push, shell) from source ev.Source; it
// is not gated by eventsSend (rule 1) and is dispatched like any other
// event, after the ones queued before it. After Close it is dropped.
func (e *Engine) Fire(ev Event) {
	e.events.push(queued{ev: ev})
}

// Idle blocks until every queued event has been dispatched (and the runs
// it caused finished), or ctx is done (then it returns ctx.Err(); nil if
// it is idle too). Events that Close dropped count as dispatched. For `etcha run -o` (which
// dispatches events too, then exits) and tests.
func (e *Engine) Idle(ctx context.Context) error {
	e.events.mu.Lock()
	idle := e.events.idle
	e.events.mu.Unlock()
	select {
	case <-idle: // first: when both are ready, a select picks at random
		return nil
	default:
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exited is closed once a command fired etcha:exit, its run finished,
// `exit` was dispatched to its receivers and state was saved (spec
// §4.6). The runner then shuts down and exits 0. The engine itself keeps
// working until Close: calls, and events queued after the exit, are
// served as before.
func (e *Engine) Exited() <-chan struct{} { return e.events.exited }

// queued is one entry of the event queue: an event, or the exit mark.
type queued struct {
	ev   Event
	exit bool // close Exited once everything before it is dispatched
}

// events is the engine-wide event queue, first in first out, and the
// state of its one dispatcher goroutine (spec §4.6 rules 3, 4).
type events struct {
	wake     chan struct{} // buffered 1: the queue got an entry
	done     chan struct{} // closed when the dispatcher returned
	exited   chan struct{} // Engine.Exited
	exitOnce sync.Once

	mu      sync.Mutex
	queue   []queued
	pending int           // entries queued and not yet dispatched
	idle    chan struct{} // closed while pending is 0
	stopped bool          // the dispatcher returned: push drops
}

// start starts the dispatcher, which returns once e.stop is closed
// (Close), dropping what is still queued; Close waits for it.
func (q *events) start(e *Engine) {
	q.wake, q.done, q.exited = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	q.idle = make(chan struct{})
	close(q.idle)
	go e.dispatch() // owned: Close waits for q.done
}

// push appends entries to the queue, in order.
func (q *events) push(items ...queued) {
	if len(items) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	if q.pending == 0 {
		q.idle = make(chan struct{})
	}
	q.pending += len(items)
	q.queue = append(q.queue, items...)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next waits for the first entry; false once stop is closed.
func (q *events) next(stop <-chan struct{}) (queued, bool) {
	for {
		select {
		case <-stop:
			return queued{}, false
		default:
		}
		q.mu.Lock()
		if len(q.queue) > 0 {
			it := q.queue[0]
			q.queue = q.queue[1:]
			q.mu.Unlock()
			return it, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-stop:
			return queued{}, false
		}
	}
}

// finished marks one entry dispatched.
func (q *events) finished() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending--
	if q.pending == 0 {
		close(q.idle)
	}
}

// drop empties the queue for good.
func (q *events) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.queue = nil
	if q.pending > 0 {
		q.pending = 0
		close(q.idle)
	}
}

// dispatch is the dispatcher goroutine.
func (e *Engine) dispatch() {
	defer close(e.events.done)
	for {
		it, ok := e.events.next(e.stop)
		if !ok {
			e.events.drop()
			return
		}
		if it.exit {
			e.exit()
		} else {
			e.deliver(it.ev)
		}
		e.events.finished()
	}
}

// deliver runs the receivers of ev one after the other, in name order
// (spec §4.6 rules 2, 3, 5, 6, 8).
func (e *Engine) deliver(ev Event) {
	names := e.receivers(ev)
	if len(names) == 0 {
		e.log.Debug("Event "+ev.Name+" has no receivers", "event", ev.Name, "from", ev.Source)
	}
	for _, name := range names {
		if !e.hasPattern(name) {
			e.log.Info("Source "+name+" skipped for event "+ev.Name+": it has no pattern", "source", name,
				"event", ev.Name, "from", ev.Source)
			continue
		}
		e.log.Info("Running source "+name+" for event "+ev.Name+" from ID "+ev.ID, "source", name,
			"event", ev.Name, "from", ev.Source)
		_, err := e.Run(e.runCtx, name, Origin{Trigger: TriggerEvent, Where: ev.Source, Env: ev.env()})
		if errors.Is(err, ErrClosed) {
			return
		}
		if err != nil {
			e.log.Error("Event not delivered", "source", name, "event", ev.Name, "err", err)
		}
	}
}

// hasPattern reports whether the source has a current pattern (patterns
// are replaced, never dropped, so a yes stays true).
func (e *Engine) hasPattern(name string) bool {
	e.mu.Lock()
	s := e.sources[name]
	e.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// receivers returns, in name order, the sources whose eventsReceive lists
// ev.Name, except its sender.
func (e *Engine) receivers(ev Event) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, n := range e.names {
		if n != ev.Source && slices.Contains(e.sources[n].cfg.EventsReceive, ev.Name) {
			out = append(out, n)
		}
	}
	return out
}

// queueEvents queues what r's run emitted (spec §4.6): the events that
// the source's eventsSend lets through, except internal ones, and, when a
// command fired exit, the exit event and the exit mark. Runs for an event
// or a webhook queue nothing but the exit mark (rule 7: no cascade).
func (e *Engine) queueEvents(s *src, r Result) {
	cascade := r.Origin.Trigger != TriggerEvent && r.Origin.Trigger != TriggerWebhook
	remote := ""
	if r.Origin.Trigger == TriggerPush {
		remote = r.Origin.Where
	}
	var items []queued
	for _, ce := range r.Events {
		ev := Event{Name: ce.Name, Source: s.cfg.Name, ID: ce.ID, Output: ce.Output, PublicKey: r.PublicKey, RemoteAddr: remote}
		switch {
		case !cascade:
		case ce.Name == "exit":
			if !slices.ContainsFunc(items, func(q queued) bool { return q.ev.Name == "exit" }) {
				items = append(items, queued{ev: ev})
			}
		case internalEvent(ce.Name):
		case s.send != nil && s.send.MatchString(ce.Name):
			items = append(items, queued{ev: ev})
		default:
			e.log.Debug("Event "+ce.Name+" not sent: eventsSend does not match it", "source", s.cfg.Name, "event", ce.Name)
		}
	}
	if r.Exit {
		items = append(items, queued{exit: true})
	}
	e.events.push(items...)
}

// exit saves every source's current JWT and closes Exited.
func (e *Engine) exit() {
	e.mu.Lock()
	srcs := make([]*src, 0, len(e.names))
	for _, n := range e.names {
		srcs = append(srcs, e.sources[n])
	}
	e.mu.Unlock()
	for _, s := range srcs {
		e.saveCurrent(s)
	}
	e.log.Info("Exiting: a command fired etcha:exit")
	e.events.exitOnce.Do(func() { close(e.events.exited) })
}

// saveCurrent saves s's current JWT, holding s.mu as swap does: a push
// replacing the pattern meanwhile cannot have its newer file overwritten
// with the JWT read before it.
func (e *Engine) saveCurrent(s *src) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.jwt == "" || s.cfg.NoRestore {
		return
	}
	if err := e.save(s.cfg.Name, s.cur.jwt); err != nil {
		e.log.Error("Pattern not saved at exit; a restart will not restore it", "source", s.cfg.Name, "err", err)
	}
}

// printStdout applies the stdout event: its output, a line each.
func (e *Engine) printStdout(evs []command.Event) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	for _, ev := range evs {
		if ev.Name == "stdout" {
			fmt.Fprintln(e.out, ev.Output)
		}
	}
}
