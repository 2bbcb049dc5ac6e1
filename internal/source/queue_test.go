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
