// Package source is the core of etcha's listen mode (spec §4.2–4.5, §4.8):
// a set of named sources, each with a current pattern, that receive signed
// pattern JWTs and run them.
//
// For every JWT handed to [Engine.Receive] it verifies (spec §3.6, via
// internal/token), refuses replays of older patterns (§11.10), compares with
// the current pattern (§3.7), renders (through a [Renderer]), diffs (§4.4),
// saves the JWT to <stateDir>/<source>.jwt (§4.5) and runs. Runs of one
// source are queued first in, first out unless it sets runMulti. At start-up
// ([New]) each source restores its saved JWT, else its static commands.
//
// It dispatches events (spec §4.6): after a run, the etcha:<name> events
// its commands fired, gated by the sender's eventsSend, run the sources
// that receive them, one after the other through their queues, from one
// engine-wide queue; system events come in through [Engine.Fire]. It runs
// webhooks ([Engine.Webhook], §4.7) and applies the stdout and exit
// events.
//
// It deliberately knows nothing about where JWTs come from: it does not read
// pull paths, fetch URLs, watch etcd, listen for HTTP, start shells or
// keep metrics. Callers hand it JWT text with an [Origin] and get a
// [Result]; [Options.OnResult] is the seam for metrics.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// Pattern is a rendered pattern as a source runs it: its run list and the
// effective exec (main exec, source exec and runExec merged).
type Pattern struct {
	Run  command.Commands
	Exec command.Exec
}

// Renderer renders the pattern of a verified JWT for a source: it applies
// the configured vars and exec layers (spec §5.3, §2.9). jwt is the raw
// token text (for the jwt var). It must be safe for concurrent use.
type Renderer interface {
	Render(ctx context.Context, source string, claims *token.Claims, jwt string) (Pattern, error)
}

// RenderFunc adapts a function to Renderer.
type RenderFunc func(ctx context.Context, source string, claims *token.Claims, jwt string) (Pattern, error)

// Render calls f.
func (f RenderFunc) Render(ctx context.Context, source string, claims *token.Claims, jwt string) (Pattern, error) {
	return f(ctx, source, claims, jwt)
}

// Config is one source (spec §4.1). The zero value (with a Name) is a
// source with no static commands and every option off.
type Config struct {
	// Name is the source name: not empty; any other text is allowed, and
	// is escaped in the state file name (see StatePath).
	Name string
	// Static is the pattern of the static commands (sources.<s>.commands
	// with the source's effective exec); nil means none.
	Static *Pattern
	// VerifyKeys are appended to Options.VerifyKeys for this source.
	VerifyKeys token.PublicKeys
	// JWTRule replaces Options.JWTRule when not empty.
	JWTRule string

	CheckOnly         bool // run in check mode only; no removals
	NoRemove          bool // never run diff removals
	NoRestore         bool // neither save nor restore <stateDir>/<source>.jwt
	TriggerOnly       bool // store new patterns but run only on events and webhooks
	RunMulti          bool // let runs overlap instead of queueing
	PullIgnoreVersion bool // ignore etchaVersion when comparing (spec §3.7)
	AllowRollback     bool // accept a JWT older than the current one (spec §11.10)

	// EventsSend is sources.<s>.eventsSend: a Go regexp, fully anchored,
	// on the names (without "etcha:") of the events this source's runs
	// may send to other sources; "" lets none through (spec §4.1, §4.6
	// rule 1).
	EventsSend string
	// EventsReceive is sources.<s>.eventsReceive: the event names
	// (exact) that run this source.
	EventsReceive []string
	// WebhookPaths is sources.<s>.webhookPaths: the request paths (exact)
	// this source answers (spec §4.7).
	WebhookPaths []string
}

// Options configure an Engine. Only Renderer is required.
type Options struct {
	// StateDir holds <source>.jwt files. "" means the working directory.
	// It is created (0700) when the first JWT is saved.
	StateDir string
	// VerifyKeys are run.verifyKeys. A source with no keys at all refuses
	// every JWT (token.ReasonNoKeys).
	VerifyKeys token.PublicKeys
	// JWTRule is run.jwtRule; "" means none.
	JWTRule string
	// MaxSize is the JWT size limit in bytes; 0 means token.DefaultMaxSize.
	MaxSize int
	// Now is the clock for exp/nbf; nil means time.Now.
	Now func() time.Time
	// Renderer renders verified JWTs.
	Renderer Renderer
	// Environ is what scripts with envInherit inherit (normally
	// os.Environ()); nil means nothing.
	Environ []string
	// Logger receives the engine's and the commands' logs; nil discards.
	Logger *slog.Logger
	// OnResult, if set, is called after every Receive and Run that got as
	// far as a Result (including refusals), in the caller's goroutine,
	// after the source's queue is released. It must not block for long.
	OnResult func(source string, origin Origin, r Result)
	// Stdout is where the stdout event prints its output, a line each
	// (spec §4.6); nil means os.Stdout.
	Stdout io.Writer
}

// ErrClosed is returned by Receive and Run after Close has begun, and to
// calls still waiting in a queue when it does.
var ErrClosed = errors.New("source engine is shutting down")

// Engine holds the sources. Its methods are safe for concurrent use.
type Engine struct {
	opts    Options
	log     *slog.Logger // component=source
	cmdLog  *slog.Logger // Options.Logger as given, for internal/command, which adds its own component
	names   []string
	sources map[string]*src

	runCtx     context.Context // cancelled when Close gives up waiting
	cancelRuns context.CancelCauseFunc
	stop       chan struct{} // closed when Close begins

	events events // the event queue and its dispatcher (events.go)

	outMu sync.Mutex // serialises the stdout event's lines
	out   io.Writer

	mu     sync.Mutex
	closed bool
	calls  sync.WaitGroup // Receive and Run calls in progress
}

// src is one source and its current pattern.
type src struct {
	cfg   Config
	send  *regexp.Regexp // Config.EventsSend, anchored; nil lets none through
	queue fifo

	mu  sync.Mutex
	cur *current // nil: no pattern
}

// current is a source's current pattern.
type current struct {
	jwt     string        // "" for static commands
	claims  *token.Claims // nil for static commands
	key     string        // ID of the verifying key
	pattern Pattern
}

// New registers the sources in name order and restores each one's current
// pattern (spec §4.2 step 2):
//
//  1. unless NoRestore, <stateDir>/<source>.jwt, if it exists, verifies
//     and renders (a file that does not is logged and ignored, never run);
//  2. else the static commands, if any;
//  3. else no pattern.
//
// Nothing runs. A missing Renderer, an empty or repeated source name is an
// error. ctx bounds the renders.
func New(ctx context.Context, opts Options, sources []Config) (*Engine, error) {
	if opts.Renderer == nil {
		return nil, errors.New("source engine: no Renderer; set Options.Renderer")
	}
	e := &Engine{opts: opts, log: opts.Logger, sources: map[string]*src{}, stop: make(chan struct{}), out: opts.Stdout}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.out == nil {
		e.out = os.Stdout
	}
	e.cmdLog, e.log = e.log, e.log.With("component", "source")
	for _, c := range sources {
		if c.Name == "" {
			return nil, errors.New("source with an empty name; give every source a name")
		}
		if _, dup := e.sources[c.Name]; dup {
			return nil, fmt.Errorf("source %q configured twice; give each source one entry", c.Name)
		}
		s, err := newSrc(c)
		if err != nil {
			return nil, err
		}
		e.sources[c.Name] = s
		e.names = append(e.names, c.Name)
	}
	slices.Sort(e.names)
	e.runCtx, e.cancelRuns = context.WithCancelCause(context.Background())
	for _, n := range e.names {
		e.restore(ctx, e.sources[n])
	}
	e.events.start(e)
	return e, nil
}

// newSrc checks c's settings that can be wrong and makes its src.
func newSrc(c Config) (*src, error) {
	s := &src{cfg: c}
	if c.EventsSend != "" {
		// Compiled alone first: wrapped, "a)|(b" would compile, as an
		// unanchored ^(?:a)|(b)$.
		if _, err := regexp.Compile(c.EventsSend); err != nil {
			return nil, fmt.Errorf("source %q: eventsSend %q is not a valid Go regexp (%v); fix the expression", c.Name, c.EventsSend, err)
		}
		s.send = regexp.MustCompile(`^(?:` + c.EventsSend + `)$`)
	}
	return s, nil
}

// Names returns the source names in order.
func (e *Engine) Names() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.names)
}

// Current returns the raw JWT of the source's current pattern ("" when it
// has none or runs static commands) and whether the source exists.
func (e *Engine) Current(name string) (jwt string, ok bool) {
	e.mu.Lock()
	s := e.sources[name]
	e.mu.Unlock()
	if s == nil {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return "", true
	}
	return s.cur.jwt, true
}

// Close stops the engine: new calls and calls waiting in a queue return
// ErrClosed at once; runs in progress may finish until ctx is done, then
// their commands' contexts are cancelled (which kills their process
// groups) and Close waits for them to return. Events still queued are
// dropped; Fire afterwards does nothing. It returns ctx's error if
// it had to cancel runs, else nil. Calling it again waits again.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.stop)
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { // owned: Close waits for done below on both paths
		e.calls.Wait()
		<-e.events.done // the dispatcher stops at e.stop; its Run calls are in e.calls
		close(done)
	}()
	select {
	case <-done:
		e.cancelRuns(ErrClosed)
		return nil
	case <-ctx.Done():
		e.cancelRuns(fmt.Errorf("%w: grace period over: %w", ErrClosed, context.Cause(ctx)))
		<-done
		return context.Cause(ctx)
	}
}

// enter registers a call, or refuses it after Close.
func (e *Engine) enter(name string) (*src, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	s := e.sources[name]
	if s == nil {
		return nil, &UnknownSourceError{Name: name}
	}
	e.calls.Add(1)
	return s, nil
}

// UnknownSourceError is returned for a source name that is not configured.
type UnknownSourceError struct{ Name string }

func (u *UnknownSourceError) Error() string {
	return fmt.Sprintf("unknown source %q; configure it under sources", clip(u.Name))
}

// acquire waits for the source's turn (none for runMulti).
func (e *Engine) acquire(ctx context.Context, s *src) (release func(), err error) {
	if s.cfg.RunMulti {
		return func() {}, nil
	}
	if err := s.queue.lock(ctx, e.stop); err != nil {
		return nil, err
	}
	return s.queue.unlock, nil
}

// runContext is ctx, also cancelled when Close gives up waiting.
func (e *Engine) runContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(e.runCtx, func() { cancel(context.Cause(e.runCtx)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// report ends every Receive and Run that got a Result: it prints the
// stdout events, calls OnResult, then queues the events to dispatch.
func (e *Engine) report(s *src, r Result) {
	e.printStdout(r.Events)
	if e.opts.OnResult != nil {
		e.opts.OnResult(s.cfg.Name, r.Origin, r)
	}
	e.queueEvents(s, r)
}

// clip shortens untrusted text for messages.
func clip(s string) string {
	const limit = 64
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
