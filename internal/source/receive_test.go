package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// The tutorial's two pushes (spec §4.4).
const (
	tutorial1 = `{run: [
  {id: 'write a file', always: true, change: 'echo hi > "$D/file"', remove: 'rm "$D/file"', onChange: ['copy file']},
  {id: 'copy file', change: 'cp "$D/file" "$D/copy"', remove: 'rm "$D/copy"'},
]}`
	tutorial2 = `{run: [
  {id: 'write a new file', check: 'test -f "$D/new"', change: 'echo new > "$D/new"', remove: 'rm "$D/new"'},
]}`
)

func TestTutorialSequence(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	first, second := v.sign(tutorial1), v.sign(tutorial2)

	r := receive(t, e, "app", first, push)
	if r.Status != StatusRan || r.Err != nil || join(r.Changed) != "write a file,copy file" || len(r.Removed) != 0 {
		t.Fatalf("push 1: status %s, changed %q, removed %q, err %v", r.Status, r.Changed, r.Removed, r.Err)
	}
	if !v.exists("file") || !v.exists("copy") {
		t.Fatal("push 1 did not write file and copy")
	}

	r = receive(t, e, "app", second, push)
	if got, want := join(r.Changed), "write a new file"; got != want {
		t.Errorf("push 2 changed %q, want %q", got, want)
	}
	if got, want := join(r.Removed), "copy file,write a file"; got != want {
		t.Errorf("push 2 removed %q, want %q", got, want)
	}
	if r.Err != nil || v.exists("file") || v.exists("copy") || !v.exists("new") {
		t.Errorf("push 2: err %v, file %v copy %v new %v; want nil, false, false, true", r.Err, v.exists("file"), v.exists("copy"), v.exists("new"))
	}
	b, _ := json.Marshal(r)
	if got, want := string(b), `{"changed":["write a new file"],"removed":["copy file","write a file"],"exit":false}`; got != want {
		t.Errorf("Result JSON %s, want %s", got, want)
	}

	r = receive(t, e, "app", second, push)
	if r.Status != StatusUnchanged || len(r.Changed)+len(r.Removed)+len(r.Outputs) != 0 {
		t.Errorf("same push again: status %s, changed %q, removed %q, %d scripts; want unchanged and nothing run", r.Status, r.Changed, r.Removed, len(r.Outputs))
	}
	b, _ = json.Marshal(r)
	if got, want := string(b), `{"changed":[],"removed":[],"exit":false}`; got != want {
		t.Errorf("Result JSON %s, want %s", got, want)
	}
}

// A different JWT of the same pattern (new iat and jti) is the same
// pattern (spec §3.7); a tick runs it anyway (spec §11.2).
func TestSamePatternRunsOnlyOnTick(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	receive(t, e, "app", v.sign(logPattern("a")), Origin{Trigger: TriggerPull, Where: "etcd:///p/app"})
	again := v.sign(logPattern("a"))
	if r := receive(t, e, "app", again, Origin{Trigger: TriggerPull}); r.Status != StatusUnchanged {
		t.Errorf("same pattern, new jwt: status %s, want unchanged", r.Status)
	}
	if got, want := v.log(), "a"; got != want {
		t.Fatalf("log %q, want %q: the same pattern ran again without a tick", got, want)
	}
	r := receive(t, e, "app", again, Origin{Trigger: TriggerPull, Tick: true})
	if r.Status != StatusRan || join(r.Changed) != "log a" || len(r.Removed) != 0 {
		t.Errorf("tick: status %s, changed %q, removed %q; want ran [log a] []", r.Status, r.Changed, r.Removed)
	}
	if got, want := v.log(), "a,a"; got != want {
		t.Errorf("log %q, want %q after a tick", got, want)
	}
}

// pullIgnoreVersion: a JWT differing only in etchaVersion is new unless it
// is set.
func TestPullIgnoreVersion(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		v := newEnv(t)
		e := v.engine(Options{}, Config{Name: "app", PullIgnoreVersion: ignore})
		c := v.claims(logPattern("a"))
		c.Version = "1"
		receive(t, e, "app", v.signWith(c, v.priv), Origin{Trigger: TriggerPull})
		c = v.claims(logPattern("a"))
		c.Version = "2"
		r := receive(t, e, "app", v.signWith(c, v.priv), Origin{Trigger: TriggerPull})
		want := StatusRan
		if ignore {
			want = StatusUnchanged
		}
		if r.Status != want {
			t.Errorf("pullIgnoreVersion %v: second version: status %s, want %s", ignore, r.Status, want)
		}
	}
}

func TestReceiveUnknownSource(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	_, err := e.Receive(t.Context(), "other", v.sign(logPattern("a")), push)
	var u *UnknownSourceError
	if !errors.As(err, &u) || u.Name != "other" {
		t.Fatalf("Receive(other) error %v, want *UnknownSourceError for other", err)
	}
	if v.log() != "" {
		t.Error("something ran for an unknown source")
	}
}

// Removals run with the old exec: the old pattern's $D, not the new one's.
func TestRemovalsUseOldExec(t *testing.T) {
	v := newEnv(t)
	oldDir := v.dir
	e := v.engine(Options{}, Config{Name: "app"})
	receive(t, e, "app", v.sign(`{run: [{id: 'x', always: true, change: 'touch "$D/x"', remove: 'rm "$D/x"'}]}`), push)
	v.dir = t.TempDir() // the renderer now gives a new exec
	r := receive(t, e, "app", v.sign(`{run: []}`), push)
	if join(r.Removed) != "x" || r.Err != nil {
		t.Fatalf("removed %q, err %v; want [x], nil", r.Removed, r.Err)
	}
	if _, err := os.Stat(filepath.Join(oldDir, "x")); !os.IsNotExist(err) {
		t.Errorf("old $D/x still there (stat err %v): the removal did not use the old exec", err)
	}
}

// removeAfter: phase 3 runs after the change run, and not when it failed.
func TestRemoveAfter(t *testing.T) {
	for _, fail := range []bool{false, true} {
		v := newEnv(t)
		e := v.engine(Options{}, Config{Name: "app"})
		receive(t, e, "app", v.sign(`{run: [
  {id: 'old1', always: true, change: 'true', remove: 'echo rm-old1 >> "$D/log"'},
  {id: 'old2', always: true, change: 'true', removeAfter: true, remove: 'echo rm-old2 >> "$D/log"'},
]}`), push)
		change := `echo new >> "$D/log"`
		if fail {
			change += "; exit 3"
		}
		r := receive(t, e, "app", v.sign(`{run: [{id: 'new', always: true, change: '`+change+`'}]}`), push)
		want, removed := "rm-old1,new,rm-old2", "old1,old2"
		if fail {
			want, removed = "rm-old1,new", "old1"
		}
		if got := v.log(); got != want {
			t.Errorf("fail=%v: log %q, want %q", fail, got, want)
		}
		if got := join(r.Removed); got != removed {
			t.Errorf("fail=%v: removed %q, want %q", fail, got, removed)
		}
		if (r.Err != nil) != fail {
			t.Errorf("fail=%v: err %v", fail, r.Err)
		}
	}
}

func TestNoRemove(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app", NoRemove: true})
	receive(t, e, "app", v.sign(tutorial1), push)
	r := receive(t, e, "app", v.sign(tutorial2), push)
	if len(r.Removed) != 0 || !v.exists("file") || !v.exists("copy") || join(r.Changed) != "write a new file" {
		t.Errorf("noRemove: removed %q, changed %q, file %v, copy %v; want nothing removed", r.Removed, r.Changed, v.exists("file"), v.exists("copy"))
	}
}

func TestTriggerOnly(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app", TriggerOnly: true})
	first := v.sign(tutorial1)
	r := receive(t, e, "app", first, push)
	if r.Status != StatusStored || len(r.Outputs) != 0 || v.exists("file") {
		t.Fatalf("triggerOnly push: status %s, %d scripts, file %v; want stored, nothing run", r.Status, len(r.Outputs), v.exists("file"))
	}
	if cur, _ := e.Current("app"); cur != first {
		t.Fatal("triggerOnly push was not made current")
	}
	if _, err := os.Stat(StatePath(v.state, "app")); err != nil {
		t.Errorf("triggerOnly push not saved: %v", err)
	}
	for _, o := range []Origin{{Trigger: TriggerStartup}, {Trigger: TriggerPull, Tick: true}} {
		if r := run(t, e, "app", o); r.Status != StatusSkipped || v.exists("file") {
			t.Errorf("Run(%q): status %s, file %v; want skipped", o.Trigger, r.Status, v.exists("file"))
		}
	}
	if r := run(t, e, "app", Origin{Trigger: TriggerEvent}); r.Status != StatusRan || !v.exists("file") {
		t.Errorf("Run(event): status %s, file %v; want ran", r.Status, v.exists("file"))
	}
	if r := receive(t, e, "app", v.sign(tutorial2), Origin{Trigger: TriggerPush, Check: true}); r.Status != StatusSkipped || len(r.Outputs) != 0 {
		t.Errorf("triggerOnly check push: status %s, %d scripts; want skipped, nothing run", r.Status, len(r.Outputs))
	}
	r = receive(t, e, "app", v.sign(tutorial2), push) // no removals either
	if r.Status != StatusStored || len(r.Removed) != 0 || !v.exists("file") || v.exists("new") {
		t.Errorf("triggerOnly second push: status %s, removed %q, file %v, new %v", r.Status, r.Removed, v.exists("file"), v.exists("new"))
	}
}

func TestCheckOnly(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app", CheckOnly: true})
	p := `{run: [{id: 'x', check: 'test -f "$D/x"', change: 'touch "$D/x"', remove: 'rm "$D/x"'}]}`
	r := receive(t, e, "app", v.sign(p), push)
	if r.Mode != command.ModeCheck || join(r.Changed) != "x" || v.exists("x") {
		t.Fatalf("checkOnly: mode %s, changed %q, x exists %v; want check, [x] would change, not created", r.Mode, r.Changed, v.exists("x"))
	}
	if err := os.WriteFile(filepath.Join(v.dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r = receive(t, e, "app", v.sign(`{run: []}`), push)
	if len(r.Removed) != 0 || !v.exists("x") {
		t.Errorf("checkOnly second push: removed %q, x exists %v; want no removal", r.Removed, v.exists("x"))
	}
	if r := run(t, e, "app", Origin{}); r.Mode != command.ModeCheck {
		t.Errorf("checkOnly Run: mode %s, want check", r.Mode)
	}
}

// A push asking for check mode is a dry run: it is neither made current
// nor saved.
func TestCheckRequestIsDryRun(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	first := v.sign(tutorial1)
	receive(t, e, "app", first, push)
	r := receive(t, e, "app", v.sign(tutorial2), Origin{Trigger: TriggerPush, Check: true})
	if r.Mode != command.ModeCheck || join(r.Changed) != "write a new file" || len(r.Removed) != 0 || v.exists("new") || !v.exists("file") {
		t.Errorf("check push: mode %s, changed %q, removed %q, new %v, file %v", r.Mode, r.Changed, r.Removed, v.exists("new"), v.exists("file"))
	}
	if cur, _ := e.Current("app"); cur != first {
		t.Error("check push was made current")
	}
	if b, _ := os.ReadFile(StatePath(v.state, "app")); string(b) != first {
		t.Error("check push was saved")
	}
}

// Result.Output is the ad-hoc push command's output; Exit reports
// etcha:exit.
func TestResultOutputAndExit(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	r := receive(t, e, "app", v.sign(`{run: [{id: 'etcha push', always: true, change: 'echo hello; echo world', onChange: ['etcha:exit']}]}`), push)
	if r.Output != "hello\nworld" || !r.Exit {
		t.Errorf("output %q, exit %v; want %q, true", r.Output, r.Exit, "hello\nworld")
	}
}

// The scripts know their source and trigger.
func TestRunEnv(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app"})
	r := receive(t, e, "app", v.sign(`{run: [{id: 'env', always: true, change: 'echo $ETCHA_SOURCE_NAME $ETCHA_SOURCE_TRIGGER $X'}]}`),
		Origin{Trigger: TriggerPush, Env: map[string]string{"X": "extra"}})
	if len(r.Outputs) == 0 || r.Outputs[len(r.Outputs)-1].Output != "app push extra" {
		t.Errorf("outputs %+v, want the change to print %q", r.Outputs, "app push extra")
	}
}

func TestOnResult(t *testing.T) {
	v := newEnv(t)
	var got []Status
	e := v.engine(Options{OnResult: func(source string, o Origin, r Result) {
		if source != "app" || o.Where != push.Where {
			t.Errorf("OnResult(%q, %+v)", source, o)
		}
		got = append(got, r.Status)
	}}, Config{Name: "app"})
	jwt := v.sign(logPattern("a"))
	receive(t, e, "app", jwt, push)
	receive(t, e, "app", jwt, push)
	receive(t, e, "app", "garbage", push)
	if want := []Status{StatusRan, StatusUnchanged, StatusRefused}; join(statusStrings(got)) != join(statusStrings(want)) {
		t.Errorf("OnResult saw %v, want %v", got, want)
	}
}

func statusStrings(ss []Status) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// Accepted and refused patterns are logged with the source, where they
// came from, iat, jti and the refusal reason.
func TestLogs(t *testing.T) {
	v := newEnv(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	e := v.engine(Options{Logger: log}, Config{Name: "app"})
	c := v.claims(logPattern("a"))
	receive(t, e, "app", v.signWith(c, v.priv), Origin{Trigger: TriggerPull, Where: "etcd:///patterns/app"})
	receive(t, e, "app", "not a jwt", Origin{Trigger: TriggerPush, Where: "192.0.2.1:5"})
	mu.Lock()
	defer mu.Unlock()
	var updating, refused map[string]any
	commandLogged := false
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["commandID"] == "log a" {
			commandLogged = true
			if strings.Count(line, `"component"`) != 1 || rec["component"] != "command" || rec["source"] != "app" {
				t.Errorf("command log record %s: want one component, command, and source app", line)
			}
		}
		switch rec["msg"] {
		case "Updating config for app":
			updating = rec
		case "Pattern refused":
			refused = rec
		}
	}
	if !commandLogged {
		t.Error("no log record of the command's run")
	}
	want := map[string]any{"source": "app", "trigger": "pull", "where": "etcd:///patterns/app", "jti": c.ID,
		"iat": c.IssuedAt.UTC().Format(time.RFC3339), "publicKey": v.pub.ID, "component": "source"}
	for k, w := range want {
		if updating[k] != w {
			t.Errorf("Updating record %s = %v, want %v (record %v)", k, updating[k], w, updating)
		}
	}
	want = map[string]any{"source": "app", "trigger": "push", "where": "192.0.2.1:5", "reason": "malformed", "level": "WARN"}
	for k, w := range want {
		if refused[k] != w {
			t.Errorf("refusal record %s = %v, want %v (record %v)", k, refused[k], w, refused)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A render cut short by the caller's context is not a refusal of the
// pattern: the call fails, nothing is reported or kept.
func TestRenderCancelled(t *testing.T) {
	v := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	v.holdRender = func(*token.Claims) { cancel() }
	reported := 0
	e := v.engine(Options{OnResult: func(string, Origin, Result) { reported++ }}, Config{Name: "app"})
	_, err := e.Receive(ctx, "app", v.sign(logPattern("a")), push)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Receive: %v, want context.Canceled", err)
	}
	if cur, _ := e.Current("app"); cur != "" || reported != 0 || v.log() != "" {
		t.Errorf("current %q, %d results reported, log %q; want nothing", cur, reported, v.log())
	}
}
