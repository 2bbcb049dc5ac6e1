package etcha

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/source"
)

// TestRunRestoreAndOptions: at start-up static commands run; a pushed
// pattern replaces them and is restored (and run) after a restart, except
// on a noRestore source, which runs its static commands again and keeps
// no state file; a triggerOnly source runs nothing at start-up or on
// push but stores the pushed pattern; a checkOnly source runs pushes in
// check mode only.
func TestRunRestoreAndOptions(t *testing.T) {
	dir := t.TempDir()
	static := func(name string) string {
		return `{id: 'static', always: true, change: 'echo static >> ` + filepath.Join(dir, name+".log") + `'}`
	}
	cfg := receiverConfig(dir, `{
    app: {allowPush: true, commands: [`+static("app")+`]},
    norestore: {allowPush: true, noRestore: true, commands: [`+static("norestore")+`]},
    trig: {allowPush: true, triggerOnly: true, commands: [`+static("trig")+`]},
    chk: {allowPush: true, checkOnly: true},
  }`)
	logOf := func(name string) string { return fileText(t, filepath.Join(dir, name+".log")) }
	pat := logPattern(t, dir, "pushed")
	stateDir := filepath.Join(dir, "state")

	r := startRun(t, cfg)
	if logOf("app") != "static\n" || logOf("norestore") != "static\n" || logOf("trig") != "" {
		t.Fatalf("start-up: app %q norestore %q trig %q; want the static commands of all but the triggerOnly source",
			logOf("app"), logOf("norestore"), logOf("trig"))
	}
	sender, out := newSender(t, r.addr, true, "app", "norestore", "trig", "chk")
	chk := writeFile(t, dir, "chk.jsonnet", `{run: [{id: 'chk', check: 'test -f `+dir+`/chk.log', change: 'echo x >> `+dir+`/chk.log'}]}`)
	for _, tc := range []struct{ source, pattern, want string }{
		{"app", pat, "recv:\n    Changed 1: pushed\n"},
		{"norestore", pat, "recv:\n    Changed 1: pushed\n"},
		{"trig", pat, "recv:\n    No changes\n"},
		{"chk", chk, "recv:\n    Changed 1: chk\n"}, // would change: check mode
	} {
		if got, err := push(t, sender, out, PushOptions{Source: tc.source, Payload: tc.pattern}); err != nil || got != tc.want {
			t.Fatalf("push to %s: %v, output %q, want %q", tc.source, err, got, tc.want)
		}
	}
	if logOf("app") != "static\npushed\n" || logOf("trig") != "" || logOf("chk") != "" {
		t.Fatalf("after the pushes: app %q trig %q chk %q", logOf("app"), logOf("trig"), logOf("chk"))
	}
	if _, err := os.Stat(source.StatePath(stateDir, "trig")); err != nil {
		t.Fatalf("triggerOnly source: the pushed pattern was not stored: %v", err)
	}
	if _, err := os.Stat(source.StatePath(stateDir, "norestore")); !os.IsNotExist(err) {
		t.Fatalf("noRestore source: state file: %v, want none", err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	r = startRun(t, cfg)
	if got := logOf("app"); got != "static\npushed\npushed\n" {
		t.Fatalf("after a restart: app log %q, want the restored pattern run (not the static commands)", got)
	}
	if got := logOf("norestore"); got != "static\npushed\nstatic\n" {
		t.Fatalf("after a restart: noRestore log %q, want the static commands again", got)
	}
	if logOf("trig") != "" {
		t.Fatal("a triggerOnly source ran at start-up")
	}
	if !strings.Contains(r.log.String(), "component=source source=app") {
		t.Fatalf("log:\n%s", r.log.String())
	}
}

// TestRunFrequency: each runFrequency tick pulls and runs the pattern
// again even when it is unchanged (spec §11.2), and a new pulled pattern
// is taken on the next tick.
func TestRunFrequency(t *testing.T) {
	dir := t.TempDir()
	jwtFile := writeFile(t, dir, "app.jwt", signAt(t, logPattern(t, dir, "one"), timeNowMinus(2)))
	r := startRun(t, receiverConfig(dir, `{app: {runFrequency: '100ms', pullPaths: ['`+jwtFile+`']}}`))
	r.log.waitLines(t, 2, "msg=pull", "source=app", "tick=true", "status=ran")
	if got := fileText(t, filepath.Join(dir, "app.log")); !strings.HasPrefix(got, "one\none\none\n") {
		t.Fatalf("after two ticks: log %q, want the start-up run and one per tick", got)
	}
	writeFile(t, dir, "app.jwt", signAt(t, logPattern(t, dir, "two"), timeNowMinus(1)))
	r.log.waitLines(t, 1, "Updating config for app", "trigger=pull")
	r.log.waitLines(t, 1, "Always changed two")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRunShutdownGrace: when Run's context ends (SIGTERM), a run in
// progress that ends within the grace period finishes (a runFrequency
// tick's run here: runs do not share the signal's context); a run that
// does not (a push's here) is killed, its process gone, when the grace
// period is over; Run returns nil.
func TestRunShutdownGrace(t *testing.T) {
	dir := t.TempDir()
	fifoA, fifoB := filepath.Join(dir, "a.fifo"), filepath.Join(dir, "b.fifo")
	for _, f := range []string{fifoA, fifoB} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	goFile := filepath.Join(dir, "go")
	tickCmd := "if [ -f " + goFile + " ]; then rm " + goFile + "; echo $$ > " + fifoA + "; sleep 1; touch " + filepath.Join(dir, "a.done") + "; fi"
	r := startRun(t, receiverConfig(dir, `{
    a: {runFrequency: '50ms', commands: [{id: 'slow tick', always: true, change: '`+tickCmd+`'}]},
    b: {allowPush: true},
  }`))
	writeFile(t, dir, "go", "")
	sender, _ := newSender(t, r.addr, true, "b")
	done := make(chan error, 1)
	go func() {
		done <- sender.Push(context.Background(), PushOptions{Source: "b", Payload: "echo $$ > " + fifoB + "; exec sleep 60"})
	}()
	pidB := 0
	for _, f := range []string{fifoA, fifoB} {
		b, err := os.ReadFile(f) // returns once the command has written its pid
		if err != nil {
			t.Fatal(err)
		}
		if f == fifoB {
			pidB, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v, want nil after its context ended", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.done")); err != nil {
		t.Fatalf("the run that ends within the grace period did not finish: %v", err)
	}
	if err := syscall.Kill(pidB, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the run still going after the grace period: process %d: kill 0 = %v, want it gone", pidB, err)
	}
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("the push did not return after Run stopped")
	}
}

// TestRunStartDelay: run.randomizedStartDelaySec delays start-up (nothing
// runs yet) and a signal during the delay ends Run at once: nil for
// `run`, an error for `run -o`, which ran nothing.
func TestRunStartDelay(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	cfg := receiverConfig(dir, `{app: {commands: [{id: 'x', always: true, change: 'touch `+marker+`'}]}}`)
	for _, once := range []bool{false, true} {
		app, _ := newApp(t, cfg, "run_randomizedStartDelaySec=3600")
		logs := newLogSink()
		app.Logger = slogTo(logs)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx, RunOptions{Once: once}) }()
		logs.waitLines(t, 1, "Waiting before start-up")
		cancel()
		select {
		case err := <-done:
			if once != (err != nil) {
				t.Fatalf("Run(once=%v) after a signal during the delay: %v", once, err)
			}
		case <-time.After(waitLong):
			t.Fatal("Run did not return after a signal during the start delay")
		}
	}
	if fileText(t, marker) != "" {
		t.Fatal("a source ran although start-up was interrupted during the delay")
	}
}
