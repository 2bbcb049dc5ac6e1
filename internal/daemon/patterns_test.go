package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcha"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// TestStopsDuringPatternRun: while a pattern command runs, a first stop
// (here the context's end, which counts as SIGTERM) lets it finish within
// KillTimeout, a second cancels it, and a third changes nothing:
// runPatterns returns the first stop, does not panic, and does not spin on
// the done context meanwhile. The command leaves a process that holds its
// output open, so the cancelled run takes os/exec's WaitDelay to end: the
// window in which the third stop arrives.
func TestStopsDuringPatternRun(t *testing.T) {
	priv, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	jwt, err := token.Sign(&token.Claims{IssuedAt: time.Now().Add(-time.Minute).Truncate(time.Second), ID: "x",
		Pattern: token.Pattern{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": `{run: [{id: 'slow', always: true, change: 'setsid sh -c \"touch ` + started + `; exec sleep 5\" & sleep 60'}]}`}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	errs := newLines()
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	log := slog.New(slog.NewTextHandler(errs, &slog.HandlerOptions{ReplaceAttr: noTime}))
	sigs := Subscribe()
	defer sigs.Stop()
	d := New(Options{Prefix: "/f/", KillTimeout: time.Minute, Logger: log, Signals: sigs,
		Patterns: &Patterns{Prefix: "/p/", App: &etcha.App{Env: os.Environ(), Logger: log}, VerifyKeys: token.PublicKeys{pub}}})
	stop, err := d.startPatterns(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := pending{patterns: map[string]patternChange{"app": {jwt: jwt}}}
	done := make(chan os.Signal, 1)
	go func() { _, s := d.runPatterns(ctx, &p, false); done <- s }()

	deadline := time.Now().Add(waitLong)
	for { // the command has started: poll its file, bounded by the deadline
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pattern command did not start; log:\n%s", errs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var before syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cancel() // a done context counts as SIGTERM, and stays done
	errs.next(t, `level=INFO msg="stop asked for while patterns run`)
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	errs.next(t, `level=WARN msg="second stop signal`)
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil { // the third
		t.Fatal(err)
	}
	select {
	case s := <-done:
		if s != syscall.SIGTERM {
			t.Fatalf("runPatterns returned %v, want the first stop (SIGTERM from the context)", s)
		}
		var after syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
			t.Fatal(err)
		}
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		if wall := time.Since(began); cpu > wall/2+200*time.Millisecond {
			t.Fatalf("the stops took %v of CPU in %v: something spins while the run ends", cpu, wall)
		}
	case <-time.After(waitLong):
		t.Fatalf("runPatterns did not return after the second stop; log:\n%s", errs.String())
	}
}

// TestEventsReceiveReloadRefused: in dispenser etcha:reload signals the
// child and reaches no source, and etcha:exit is ignored, so a
// sources.<s>.eventsReceive that lists reload or exit (it would never
// run) is refused at start, in one line naming it.
func TestEventsReceiveReloadRefused(t *testing.T) {
	_, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	sigs := Subscribe()
	defer sigs.Stop()
	for event, want := range map[string]string{
		"reload": "--etcha-config: sources.c.eventsReceive lists reload, but in dispenser etcha:reload signals the child and reaches no source; remove it",
		"exit":   "--etcha-config: sources.c.eventsReceive lists exit, but etcha:exit has no effect in dispenser (it never exits for it); remove it",
	} {
		cfg := &etcha.Config{Sources: map[string]*etcha.SourceConfig{
			"a": {EventsReceive: []string{"hello"}}, "c": {EventsReceive: []string{"hello", event}}, "n": nil}}
		d := New(Options{Prefix: "/f/", Logger: slog.New(slog.DiscardHandler), Signals: sigs,
			Patterns: &Patterns{Prefix: "/p/", App: &etcha.App{Config: cfg}, VerifyKeys: token.PublicKeys{pub}}})
		stop, err := d.startPatterns(context.Background())
		if err == nil {
			stop()
			t.Fatalf("startPatterns accepted sources.c.eventsReceive listing %s", event)
		}
		if err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
	}
}
