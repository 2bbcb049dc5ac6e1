package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// pat renders jsonnet as a source's static commands.
func (v *env) pat(jsonnet string) *Pattern {
	v.tb.Helper()
	p, err := v.Render(context.Background(), "", v.claims(jsonnet), "")
	if err != nil {
		v.tb.Fatal(err)
	}
	return &p
}

// idle waits up to 30 s for the engine's events and their runs.
func idle(tb testing.TB, e *Engine) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Idle(ctx); err != nil {
		tb.Fatalf("Idle: %v", err)
	}
}

// syncBuf is a bytes.Buffer safe for concurrent writes and reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records decodes the JSON log lines in s.
func (s *syncBuf) records(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// recvPattern appends "<event>:<receiving source>" to $D/log.
const recvPattern = `{run: [{id: 'recv', always: true, change: 'echo "$ETCHA_EVENT_NAME:$ETCHA_SOURCE_NAME" >> "$D/log"'}]}`

// emitPattern has a command per name that prints out-<name> and fires
// etcha:<name>.
func emitPattern(names ...string) string {
	var b strings.Builder
	b.WriteString("{run: [")
	for _, n := range names {
		b.WriteString(`{id: 'emit ` + n + `', always: true, change: 'echo out-` + n + `', onChange: ['etcha:` + n + `']},`)
	}
	b.WriteString("]}")
	return b.String()
}

// Rule 1: eventsSend is a fully anchored regexp on the event name; ""
// lets none through; internal events never go to other sources.
func TestEventsSendGate(t *testing.T) {
	v := newEnv(t)
	all := []string{"a", "b", "ab", "xa", "c", "stdout", "webhookBody"}
	e := v.engine(Options{Stdout: &syncBuf{}},
		Config{Name: "gated", EventsSend: "a|b", Static: v.pat(emitPattern(all...))},
		Config{Name: "mute", Static: v.pat(emitPattern(all...))},
		Config{Name: "open", EventsSend: ".*", Static: v.pat(emitPattern(all...))},
		Config{Name: "recv", EventsReceive: all, Static: v.pat(recvPattern)})
	run(t, e, "gated", Origin{})
	idle(t, e)
	if got, want := v.log(), "a:recv,b:recv"; got != want {
		t.Errorf("eventsSend a|b let through %q, want %q", got, want)
	}
	run(t, e, "mute", Origin{})
	idle(t, e)
	if got, want := v.log(), "a:recv,b:recv"; got != want {
		t.Errorf("eventsSend \"\" let events through: log %q, want %q", got, want)
	}
	run(t, e, "open", Origin{})
	idle(t, e)
	if got, want := v.log(), "a:recv,b:recv,a:recv,b:recv,ab:recv,xa:recv,c:recv"; got != want {
		t.Errorf("eventsSend .*: log %q, want %q (internal events stay internal)", got, want)
	}
}

// Rule 1: the system events pull, push and shell that etcha fires are not
// gated by the sender's eventsSend; like any event they do not go to the
// source they come from.
func TestFireNotGated(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "mute"},
		Config{Name: "recv", EventsReceive: []string{"pull", "push", "shell"}, Static: v.pat(recvPattern)})
	for _, n := range []string{"pull", "push", "shell"} {
		e.Fire(Event{Name: n, Source: "mute"})
		e.Fire(Event{Name: n, Source: "recv"}) // about recv itself: not to recv (rule 2)
	}
	idle(t, e)
	if got, want := v.log(), "pull:recv,push:recv,shell:recv"; got != want {
		t.Errorf("fired pull, push, shell: log %q, want %q", got, want)
	}
}

// Rules 2, 3: receivers are the sources that list the name, except the
// sender, in name order; events go in the order they were emitted, within
// one run and across runs.
func TestEventReceiversAndOrder(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		// Configured out of order: New sorts.
		Config{Name: "r2", EventsReceive: []string{"e2", "e1"}, Static: v.pat(recvPattern)},
		Config{Name: "s1", EventsSend: ".*", EventsReceive: []string{"e1", "e2", "e3"}, Static: v.pat(`{run: [
		  {id: 'log', always: true, change: '[ "$ETCHA_SOURCE_TRIGGER" != event ] || echo "$ETCHA_EVENT_NAME:$ETCHA_SOURCE_NAME" >> "$D/log"'},
		  {id: 'e1', always: true, change: 'true', onChange: ['etcha:e1']},
		  {id: 'e2', always: true, change: 'true', onChange: ['etcha:e2']},
		  {id: 'e3', always: true, change: 'true', onChange: ['etcha:e3']},
		]}`)},
		Config{Name: "r1", EventsReceive: []string{"e1", "e3"}, Static: v.pat(recvPattern)},
		Config{Name: "s2", EventsSend: ".*", Static: v.pat(emitPattern("e3", "e2"))},
	)
	run(t, e, "s1", Origin{})
	run(t, e, "s2", Origin{})
	idle(t, e)
	// s1 lists e1..e3 but does not get its own; it gets s2's (its event
	// runs emit again, but an event run cascades no further).
	if got, want := v.log(), "e1:r1,e1:r2,e2:r2,e3:r1,e3:r1,e3:s1,e2:r2,e2:s1"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// waitFile is a script line that waits (30 s at most) for $D/<name>.
func waitFile(name string) string {
	return `i=0; while [ ! -f "$D/` + name + `" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`
}

// Rule 4: events are dispatched after the emitting run completed, through
// the receiver's queue: a receiver run in progress finishes first.
func TestEventAfterRunThroughQueue(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "recv", EventsReceive: []string{"x"}, Static: v.pat(`{run: [{id: 'r', always: true, change: |||
		  if [ "$ETCHA_SOURCE_TRIGGER" = event ]; then
		    echo event >> "$D/log"
		  else
		    echo held >> "$D/log"
		    ` + waitFile("release") + `
		    echo held-end >> "$D/log"
		  fi
		|||}]}`)},
		Config{Name: "send", EventsSend: "x", Static: v.pat(`{run: [
		  {id: 'emit', always: true, change: 'echo emitted >> "$D/log"', onChange: ['etcha:x']},
		  {id: 'last', always: true, change: |||
		    ` + waitFile("go") + `
		    echo sender-done >> "$D/log"
		  |||},
		]}`)})
	held := make(chan error, 1)
	go func() {
		_, err := e.Run(context.Background(), "recv", Origin{})
		held <- err
	}()
	v.waitLog("the held run", func(l string) bool { return l == "held" })
	sent := make(chan error, 1)
	go func() {
		_, err := e.Run(context.Background(), "send", Origin{})
		sent <- err
	}()
	v.waitLog("the event's emission", func(l string) bool { return l == "held,emitted" })
	// The sender's run is still going: nothing may be queued yet (an event
	// queued now would stay pending behind recv's held run).
	none, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Idle(none); err != nil {
		t.Errorf("an event is pending while the emitting run is still going (Idle: %v)", err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) for the dispatcher to wait in recv's queue.
	s := e.sources["recv"]
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.queue.mu.Lock()
		n := len(s.queue.waiters)
		s.queue.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event run did not queue behind the held run in 20 s; log %q", v.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(v.dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	idle(t, e)
	if got, want := v.log(), "held,emitted,sender-done,held-end,event"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// Rule 5: a receiver runs its current pattern with no diff; triggerOnly
// does not stop it; checkOnly runs it in check mode.
func TestEventRunCurrentPattern(t *testing.T) {
	v := newEnv(t)
	var mu sync.Mutex
	results := map[string]Result{}
	e := v.engine(Options{OnResult: func(source string, o Origin, r Result) {
		if o.Trigger == TriggerEvent {
			mu.Lock()
			results[source] = r
			mu.Unlock()
		}
	}},
		Config{Name: "checker", CheckOnly: true, EventsReceive: []string{"x"}, Static: v.pat(`{run: [
		  {id: 'drift', check: 'echo checked >> "$D/log"; false', change: 'echo changed >> "$D/log"'}]}`)},
		Config{Name: "lazy", TriggerOnly: true, EventsReceive: []string{"x"}},
		Config{Name: "send", EventsSend: "x", Static: v.pat(emitPattern("x"))})
	// lazy stores two patterns (triggerOnly: nothing runs, nothing is
	// removed); the second lacks the first's command.
	receive(t, e, "lazy", v.sign(`{run: [{id: 'old', check: 'true', remove: 'echo removed >> "$D/log"'}]}`), push)
	if r := receive(t, e, "lazy", v.sign(logPattern("lazy")), push); r.Status != StatusStored {
		t.Fatalf("triggerOnly push: status %s, want stored", r.Status)
	}
	if got := v.log(); got != "" {
		t.Fatalf("triggerOnly pushes ran %q", got)
	}
	run(t, e, "send", Origin{})
	idle(t, e)
	if got, want := v.log(), "checked,lazy"; got != want {
		t.Errorf("log %q, want %q (checkOnly: check only; triggerOnly: runs; no removal)", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if r := results["checker"]; r.Mode != command.ModeCheck || join(r.Changed) != "drift" || r.Status != StatusRan {
		t.Errorf("checkOnly receiver: mode %q, changed %q, status %s; want check, drift, ran", r.Mode, r.Changed, r.Status)
	}
	if r := results["lazy"]; r.Status != StatusRan || len(r.Removed) != 0 || join(r.Changed) != "log lazy" {
		t.Errorf("triggerOnly receiver: status %s, changed %q, removed %q; want ran, [log lazy], none", r.Status, r.Changed, r.Removed)
	}
}

// Rule 5, §2.7: the environment of an event run.
func TestEventEnv(t *testing.T) {
	v := newEnv(t)
	dump := `{run: [{id: 'dump', always: true, change: 'env | grep -E "^ETCHA_(EVENT|SOURCE)_" | sort > "$D/env-$ETCHA_EVENT_NAME"'}]}`
	e := v.engine(Options{},
		Config{Name: "recv", EventsReceive: []string{"x", "pull"}, Static: v.pat(dump)},
		Config{Name: "send", EventsSend: "x"})
	receive(t, e, "send", v.sign(`{run: [{id: 'emit it', always: true, change: 'echo "  hello world  "', onChange: ['etcha:x']}]}`),
		Origin{Trigger: TriggerPush, Where: "[2001:db8::1]:4000"})
	e.Fire(Event{Name: "pull", Source: "send", PublicKey: "k1"})
	idle(t, e)
	for name, want := range map[string]string{
		"x": "ETCHA_EVENT_ID=emit it\nETCHA_EVENT_NAME=x\nETCHA_EVENT_OUTPUT=hello world\nETCHA_EVENT_PUBLIC_KEY=" + v.pub.ID +
			"\nETCHA_EVENT_SRC=[2001:db8::1]:4000\nETCHA_SOURCE_NAME=recv\nETCHA_SOURCE_TRIGGER=event\n",
		"pull": "ETCHA_EVENT_ID=\nETCHA_EVENT_NAME=pull\nETCHA_EVENT_OUTPUT=\nETCHA_EVENT_PUBLIC_KEY=k1" +
			"\nETCHA_EVENT_SRC=\nETCHA_SOURCE_NAME=recv\nETCHA_SOURCE_TRIGGER=event\n",
	} {
		b, err := os.ReadFile(filepath.Join(v.dir, "env-"+name))
		if err != nil {
			t.Errorf("event %s: %v", name, err)
			continue
		}
		if string(b) != want {
			t.Errorf("event %s env:\n%s\nwant:\n%s", name, b, want)
		}
	}
}

// Rule 6: a failing receiver stops neither later receivers nor later
// events.
func TestEventReceiverErrorGoesOn(t *testing.T) {
	v := newEnv(t)
	fail := `{run: [{id: 'fail', always: true, change: 'echo "fail-$ETCHA_EVENT_NAME" >> "$D/log"; exit 3'}]}`
	e := v.engine(Options{},
		Config{Name: "a", EventsReceive: []string{"x", "y"}, Static: v.pat(fail)},
		Config{Name: "b", EventsReceive: []string{"x", "y"}, Static: v.pat(recvPattern)},
		Config{Name: "send", EventsSend: ".*", Static: v.pat(emitPattern("x", "y"))})
	run(t, e, "send", Origin{})
	idle(t, e)
	if got, want := v.log(), "fail-x,x:b,fail-y,y:b"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// Rule 7: events from an event run go to no source, but their internal
// effects (stdout) apply.
func TestEventNoCascade(t *testing.T) {
	v := newEnv(t)
	var out syncBuf
	e := v.engine(Options{Stdout: &out},
		Config{Name: "mid", EventsSend: ".*", EventsReceive: []string{"x"}, Static: v.pat(`{run: [
		  {id: 'relay', always: true, change: 'echo "x:mid" >> "$D/log"; echo relayed', onChange: ['etcha:y', 'etcha:stdout']}]}`)},
		Config{Name: "end", EventsReceive: []string{"y"}, Static: v.pat(recvPattern)},
		Config{Name: "send", EventsSend: ".*", Static: v.pat(emitPattern("x"))})
	run(t, e, "send", Origin{})
	idle(t, e)
	if got, want := v.log(), "x:mid"; got != want {
		t.Errorf("log %q, want %q (y from an event run must not run end)", got, want)
	}
	if got, want := out.String(), "relayed\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}

// Rule 8, and a receiver without a pattern: it is skipped with a log line
// that says so, and the next receiver runs.
func TestEventLogAndReceiverWithoutPattern(t *testing.T) {
	v := newEnv(t)
	var buf syncBuf
	var mu sync.Mutex
	var seen []string
	e := v.engine(Options{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnResult: func(source string, o Origin, r Result) {
			mu.Lock()
			seen = append(seen, source+"/"+string(r.Status))
			mu.Unlock()
		}},
		Config{Name: "empty", EventsReceive: []string{"x"}},
		Config{Name: "recv", EventsReceive: []string{"x"}, Static: v.pat(recvPattern)},
		Config{Name: "send", EventsSend: "x", Static: v.pat(emitPattern("x"))})
	run(t, e, "send", Origin{})
	idle(t, e)
	if got, want := v.log(), "x:recv"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
	var running, skipped []string
	for _, rec := range buf.records(t) {
		msg, _ := rec["msg"].(string)
		switch {
		case strings.HasPrefix(msg, "Running source "):
			running = append(running, msg)
		case rec["event"] == "x" && rec["source"] == "empty":
			skipped = append(skipped, msg+"/"+rec["level"].(string))
		}
	}
	if got, want := strings.Join(running, ";"), "Running source recv for event x from ID emit x"; got != want {
		t.Errorf("Running lines %q, want %q", got, want)
	}
	if got, want := strings.Join(skipped, ";"), "Source empty skipped for event x: it has no pattern/INFO"; got != want {
		t.Errorf("skip lines %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(seen, ","), "send/ran,recv/ran"; got != want {
		t.Errorf("OnResult saw %q, want %q", got, want)
	}
}

// The stdout event prints its output, a line each, whatever the trigger.
func TestStdoutEvent(t *testing.T) {
	v := newEnv(t)
	var out syncBuf
	e := v.engine(Options{Stdout: &out}, Config{Name: "app"})
	receive(t, e, "app", v.sign(`{run: [
	  {id: 'one', always: true, change: 'echo first', onChange: ['etcha:stdout']},
	  {id: 'two', always: true, change: 'printf "two\\nlines\\n"', onChange: ['etcha:stdout']},
	]}`), push)
	if got, want := out.String(), "first\ntwo\nlines\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}

// etcha:exit: the run finishes, exit goes to the receivers (not gated by
// eventsSend), every current JWT is saved, then Exited is closed; Result
// says exit. The engine keeps working until Close (the runner closes it).
func TestExitEvent(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "app"},
		Config{Name: "recv", EventsReceive: []string{"exit"}, Static: v.pat(`{run: [{id: 'held', always: true, change: |||
		  echo "$ETCHA_EVENT_NAME:$ETCHA_SOURCE_NAME" >> "$D/log"
		  i=0; while [ ! -f "$D/release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
		|||}]}`)})
	jwt := v.sign(`{run: [
	  {id: 'bye', always: true, change: 'echo bye >> "$D/log"', onChange: ['etcha:exit']},
	  {id: 'after', always: true, change: 'echo after >> "$D/log"'},
	]}`)
	r := receive(t, e, "app", jwt, push)
	if !r.Exit {
		t.Error("Result.Exit false after etcha:exit")
	}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"exit":true`) {
		t.Errorf("Result JSON %s lacks exit true", b)
	}
	// The receipt saved the JWT; exit must save it again. recv's exit run
	// is held meanwhile.
	v.waitLog("the exit event run", func(l string) bool { return l == "bye,after,exit:recv" })
	statePath := filepath.Join(v.state, "app.jwt")
	if err := os.Remove(statePath); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Exited():
		t.Fatal("Exited closed while exit was still being dispatched")
	default:
	}
	if err := os.WriteFile(filepath.Join(v.dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("Exited not closed 30 s after etcha:exit; log %q", v.log())
	}
	if b, err := os.ReadFile(statePath); err != nil || string(b) != jwt {
		t.Errorf("state file after exit: %q, %v; want the current JWT", b, err)
	}
	// After exit the engine still runs (until Close).
	run(t, e, "recv", Origin{})
	if got, want := v.log(), "bye,after,exit:recv,:recv"; got != want {
		t.Errorf("run after exit: log %q, want %q", got, want)
	}
}

// Idle waits for the runs events caused; it gives up with ctx.
func TestIdle(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "recv", EventsReceive: []string{"x"}, Static: v.pat(`{run: [{id: 'slow', always: true, change: |||
		  echo started >> "$D/log"
		  i=0; while [ ! -f "$D/release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
		  echo done >> "$D/log"
		|||}]}`)})
	idle(t, e) // nothing queued: at once
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 { // a select on both would pick at random
		if err := e.Idle(done); err != nil {
			t.Fatalf("Idle with nothing queued and a cancelled ctx: %v on call %d, want nil", err, i+1)
		}
	}
	e.Fire(Event{Name: "x", Source: "elsewhere"})
	v.waitLog("the event run", func(l string) bool { return l == "started" })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Idle(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Idle with a cancelled ctx during a run: %v, want context.Canceled", err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	idle(t, e)
	if got, want := v.log(), "started,done"; got != want {
		t.Errorf("after Idle: log %q, want %q", got, want)
	}
}

// Close stops dispatch: queued events are dropped, Idle returns, Fire
// afterwards does nothing, and no goroutine is left (TestMain).
func TestCloseStopsDispatch(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "recv", EventsReceive: []string{"x", "y"}, Static: v.pat(`{run: [{id: 'slow', always: true, change: |||
		  echo "$ETCHA_EVENT_NAME" >> "$D/log"
		  i=0; while [ ! -f "$D/release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
		|||}]}`)})
	e.Fire(Event{Name: "x", Source: "elsewhere"})
	e.Fire(Event{Name: "y", Source: "elsewhere"})
	v.waitLog("the first event run", func(l string) bool { return l == "x" })
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		closed <- e.Close(ctx)
	}()
	// Close refuses new calls at once; then let the running one finish.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := e.Run(context.Background(), "recv", Origin{}); errors.Is(err, ErrClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run not refused 20 s after Close began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(v.dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	idle(t, e)
	e.Fire(Event{Name: "y", Source: "elsewhere"})
	idle(t, e)
	if got, want := v.log(), "x"; got != want {
		t.Errorf("log %q, want %q (y was queued when Close began)", got, want)
	}
}

// New and Add refuse an eventsSend that is not a Go regexp, also one
// that the anchoring would turn into a valid but unanchored one.
func TestEventsSendBadRegexp(t *testing.T) {
	v := newEnv(t)
	for expr, why := range map[string]string{
		"a(":    "missing closing ): `a(`",
		"a)|(b": "unexpected ): `a)|(b`",
	} {
		want := fmt.Sprintf("source \"app\": eventsSend %q is not a valid Go regexp (error parsing regexp: %s); fix the expression", expr, why)
		_, err := New(context.Background(), Options{Renderer: v}, []Config{{Name: "app", EventsSend: expr}})
		if err == nil || err.Error() != want {
			t.Errorf("New: %v, want %s", err, want)
		}
		e := v.engine(Options{})
		err = e.Add(context.Background(), Config{Name: "app", EventsSend: expr})
		if err == nil || err.Error() != want {
			t.Errorf("Add: %v, want %s", err, want)
		}
		if names := e.Names(); len(names) != 0 {
			t.Errorf("Add registered %q after refusing it", names)
		}
	}
}

// exit saves every current JWT while pushes go on: the state file ends
// with the current pattern, never an older one that exit read before a
// push replaced it.
func TestExitSaveRacesPush(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{},
		Config{Name: "app", RunMulti: true},
		Config{Name: "ex", RunMulti: true, Static: v.pat(`{run: [{id: 'bye', always: true, change: 'true', onChange: ['etcha:exit']}]}`)})
	const n = 40
	jwts := make([]string, n)
	for i := range jwts {
		jwts[i] = v.sign(`{run: []}` + strings.Repeat(" ", i)) // a different pattern each, newer each
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for range n {
			run(t, e, "ex", Origin{})
		}
	})
	for _, j := range jwts {
		receive(t, e, "app", j, push)
	}
	wg.Wait()
	idle(t, e)
	cur, _ := e.Current("app")
	if b, err := os.ReadFile(filepath.Join(v.state, "app.jwt")); err != nil || string(b) != cur || cur != jwts[n-1] {
		t.Errorf("state file is the current pattern: %v (err %v); current is the last push: %v", string(b) == cur, err, cur == jwts[n-1])
	}
}
