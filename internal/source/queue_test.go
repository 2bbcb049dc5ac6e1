package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// gatePattern appends start-<word> to $D/log, waits (at most about 30 s)
// for $D/gate to exist, then appends end-<word>.
func gatePattern(word string) string {
	return `{run: [{id: 'gate', always: true, change: 'echo start-` + word + ` >> "$D/log"; i=0; ` +
		`while [ ! -e "$D/gate" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; echo end-` + word + ` >> "$D/log"'}]}`
}

func (v *env) openGate() {
	if err := os.WriteFile(filepath.Join(v.dir, "gate"), nil, 0o600); err != nil {
		v.tb.Error(err)
	}
}

// waitWaiters waits up to 20 s for n calls to wait in the source's queue.
func waitWaiters(tb testing.TB, e *Engine, name string, n int) {
	tb.Helper()
	q := &e.sources[name].queue
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		q.mu.Lock()
		got := len(q.waiters)
		q.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waited 20 s for %d queued calls on %s; %d are queued", n, name, got)
		}
		<-tick.C
	}
}

// call is the outcome of a Receive or Run made in a goroutine.
type call struct {
	label string
	r     Result
	err   error
}

func startCall(wg *sync.WaitGroup, out chan<- call, label string, f func() (Result, error)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := f()
		out <- call{label, r, err}
	}()
}

func awaitCall(tb testing.TB, ch <-chan call) call {
	tb.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(20 * time.Second):
		tb.Fatal("waited 20 s for a call to return")
		return call{}
	}
}

// Runs of one source never overlap and are served in arrival order; a
// queued call whose context ends leaves the queue.
func TestQueueFIFO(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "q"})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer v.openGate() // runs first, also when the test fails early
	done := make(chan call, 4)
	ctx := t.Context()

	startCall(&wg, done, "push a", func() (Result, error) { return e.Receive(ctx, "q", v.sign(gatePattern("a")), push) })
	v.waitLog("the first run to start", func(s string) bool { return s == "start-a" })
	startCall(&wg, done, "tick", func() (Result, error) { return e.Run(ctx, "q", Origin{Trigger: TriggerPull, Tick: true}) })
	waitWaiters(t, e, "q", 1)
	b := v.sign(logPattern("b"))
	startCall(&wg, done, "push b", func() (Result, error) { return e.Receive(ctx, "q", b, push) })
	waitWaiters(t, e, "q", 2)
	gone, cancel := context.WithCancel(ctx)
	cancelled := make(chan call, 1)
	startCall(&wg, cancelled, "cancelled", func() (Result, error) { return e.Run(gone, "q", Origin{}) })
	waitWaiters(t, e, "q", 3)
	cancel()
	if c := awaitCall(t, cancelled); !errors.Is(c.err, context.Canceled) {
		t.Errorf("queued call whose ctx ended: err %v, want context.Canceled", c.err)
	}
	waitWaiters(t, e, "q", 2)
	if got := v.log(); got != "start-a" {
		t.Fatalf("log %q while the first run waits: a queued run started", got)
	}

	v.openGate()
	var order []string
	for range 3 {
		c := awaitCall(t, done)
		if c.err != nil || c.r.Status != StatusRan || c.r.Err != nil {
			t.Errorf("%s: err %v, status %s, run err %v", c.label, c.err, c.r.Status, c.r.Err)
		}
		order = append(order, c.label)
	}
	if got, want := v.log(), "start-a,end-a,start-a,end-a,b"; got != want {
		t.Errorf("log %q, want %q (runs one at a time, in arrival order)", got, want)
	}
	if got, want := strings.Join(order, ","), "push a,tick,push b"; got != want {
		t.Errorf("calls returned in order %q, want %q", got, want)
	}
}

// runMulti: a second run starts while the first is still running.
func TestRunMultiOverlaps(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "m", RunMulti: true})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer v.openGate()
	done := make(chan call, 2)
	ctx := t.Context()
	startCall(&wg, done, "push", func() (Result, error) { return e.Receive(ctx, "m", v.sign(gatePattern("a")), push) })
	v.waitLog("the first run to start", func(s string) bool { return s == "start-a" })
	startCall(&wg, done, "run", func() (Result, error) { return e.Run(ctx, "m", Origin{}) })
	v.waitLog("a second run to start while the first waits", func(s string) bool { return s == "start-a,start-a" })
	v.openGate()
	for range 2 {
		if c := awaitCall(t, done); c.err != nil || c.r.Err != nil {
			t.Errorf("%s: %v %v", c.label, c.err, c.r.Err)
		}
	}
	if got, want := v.log(), "start-a,start-a,end-a,end-a"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// Close refuses new and queued calls at once and lets the running one
// finish.
func TestCloseLetsRunningFinish(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "q"})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer v.openGate()
	running, queued := make(chan call, 1), make(chan call, 1)
	ctx := t.Context()
	startCall(&wg, running, "push", func() (Result, error) { return e.Receive(ctx, "q", v.sign(gatePattern("a")), push) })
	v.waitLog("the run to start", func(s string) bool { return s == "start-a" })
	startCall(&wg, queued, "queued", func() (Result, error) { return e.Run(ctx, "q", Origin{}) })
	waitWaiters(t, e, "q", 1)

	closed := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		closed <- e.Close(ctx)
	}()
	if c := awaitCall(t, queued); !errors.Is(c.err, ErrClosed) {
		t.Errorf("queued call at Close: err %v, want ErrClosed", c.err)
	}
	if _, err := e.Receive(ctx, "q", v.sign(logPattern("late")), push); !errors.Is(err, ErrClosed) {
		t.Errorf("Receive during Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a run was in progress", err)
	default: // the run cannot end before the gate opens
	}
	v.openGate()
	if c := awaitCall(t, running); c.err != nil || c.r.Err != nil || c.r.Status != StatusRan {
		t.Errorf("running call: %v, status %s, run err %v; want it to finish", c.err, c.r.Status, c.r.Err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after the run finished")
	}
	if got, want := v.log(), "start-a,end-a"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// When Close's context ends first, the running commands are killed.
func TestCloseGraceOver(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "q"})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer v.openGate()
	running := make(chan call, 1)
	startCall(&wg, running, "push", func() (Result, error) { return e.Receive(t.Context(), "q", v.sign(gatePattern("a")), push) })
	v.waitLog("the run to start", func(s string) bool { return s == "start-a" })
	grace, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := e.Close(grace); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v, want DeadlineExceeded", err)
	}
	c := awaitCall(t, running)
	if c.err != nil || c.r.Err == nil {
		t.Errorf("killed run: call err %v, run err %v; want the run to report its failure", c.err, c.r.Err)
	}
	if got := v.log(); got != "start-a" {
		t.Errorf("log %q: the run was not killed", got)
	}
}

// Concurrent Receives of patterns signed in sequence: with rollback
// protection, whatever the arrival order, the newest ends up current, and
// exactly the accepted ones ran.
func TestConcurrentReceivesKeepNewest(t *testing.T) {
	for _, multi := range []bool{false, true} {
		v := newEnv(t)
		e := v.engine(Options{}, Config{Name: "c", RunMulti: multi})
		var jwts []string
		for i := range 6 {
			jwts = append(jwts, v.sign(logPattern(string(rune('a'+i)))))
		}
		var wg sync.WaitGroup
		done := make(chan call, len(jwts))
		for i := len(jwts) - 1; i >= 0; i-- { // newest first gives the most refusals
			startCall(&wg, done, jwts[i], func() (Result, error) { return e.Receive(t.Context(), "c", jwts[i], push) })
		}
		wg.Wait()
		ran := 0
		for range jwts {
			c := awaitCall(t, done)
			switch {
			case c.err != nil || c.r.Err != nil && c.r.Reason != ReasonRollback:
				t.Errorf("runMulti %v: %v %v", multi, c.err, c.r.Err)
			case c.r.Status == StatusRan:
				ran++
			}
		}
		if cur, _ := e.Current("c"); cur != jwts[len(jwts)-1] {
			t.Errorf("runMulti %v: the newest pattern is not current", multi)
		}
		if got := len(strings.Split(v.log(), ",")); got != ran || ran == 0 {
			t.Errorf("runMulti %v: %d runs logged, %d results say ran", multi, got, ran)
		}
		if b, _ := os.ReadFile(StatePath(v.state, "c")); string(b) != jwts[len(jwts)-1] {
			t.Errorf("runMulti %v: the saved pattern is not the newest", multi)
		}
	}
}

// runMulti: an older pattern whose render finishes after a newer pattern
// was taken is refused when it would be made current (the rollback check
// is repeated then, not only before rendering).
func TestRunMultiOlderLosesRace(t *testing.T) {
	v := newEnv(t)
	older := v.sign(logPattern("old"))
	newer := v.sign(logPattern("new"))
	rendering, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v.holdRender = func(c *token.Claims) {
		if strings.Contains(c.Pattern.Files["/main.jsonnet"], "echo old") {
			once.Do(func() { close(rendering) })
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
	}
	e := v.engine(Options{}, Config{Name: "m", RunMulti: true})
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan call, 1)
	startCall(&wg, done, "older", func() (Result, error) { return e.Receive(t.Context(), "m", older, push) })
	select {
	case <-rendering:
	case <-time.After(20 * time.Second):
		t.Fatal("the older pattern's render did not start")
	}
	if r := receive(t, e, "m", newer, push); r.Status != StatusRan {
		t.Fatalf("newer: status %s, err %v", r.Status, r.Err)
	}
	close(release)
	if c := awaitCall(t, done); c.err != nil || c.r.Status != StatusRefused || c.r.Reason != ReasonRollback {
		t.Errorf("older after newer: err %v, status %s, reason %q; want refused for rollback", c.err, c.r.Status, c.r.Reason)
	}
	if cur, _ := e.Current("m"); cur != newer || v.log() != "new" {
		t.Errorf("current is newer: %v; log %q, want new", cur == newer, v.log())
	}
}
