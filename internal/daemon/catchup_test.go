package daemon

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/watch"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// TestStopDuringCatchUp: while etcd keeps delivering a catch-up (batches
// with More), 60 SIGHUPs and then a SIGTERM arrive. The SIGHUPs reach the
// child during the catch-up, the SIGTERM ends it at once, and nothing of it
// is written (issue 7 items 10 and 12).
func TestStopDuringCatchUp(t *testing.T) {
	dir := t.TempDir()
	errs := newLines()
	log := slog.New(slog.NewTextHandler(errs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := writer.New(writer.Options{Dir: dir, Layout: writer.Atomic, FileMode: 0o600, UID: -1, GID: -1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sigs := Subscribe()
	defer sigs.Stop()
	out := newLines()
	d := New(Options{Target: dir, Writer: w, KillTimeout: 10 * time.Second, Argv: childArgv(dir),
		Stdout: out, Stderr: errs, Logger: log, Signals: sigs})
	if err := d.startChild(); err != nil {
		t.Fatal(err)
	}
	out.next(t, "ready")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches := make(chan watch.Batch)
	feeding := make(chan struct{})
	go func() { // a catch-up that would last a minute
		defer close(feeding)
		for i := 1; i <= 600; i++ {
			b := watch.Batch{Rev: int64(i), More: true, Changes: []watch.Change{{Key: "k" + strconv.Itoa(i), Value: []byte("v")}}}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			select {
			case <-time.After(100 * time.Millisecond): // etcd's pace for a catch-up
			case <-ctx.Done():
				return
			}
		}
	}()
	result := make(chan os.Signal, 1)
	go func() { result <- d.loop(ctx, batches) }()

	for range 60 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	out.next(t, "HUP") // forwarded during the catch-up
	sent := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-result:
		if s != syscall.SIGTERM {
			t.Fatalf("loop returned %v, want SIGTERM", s)
		}
		t.Logf("loop stopped %v after SIGTERM", time.Since(sent))
	case <-time.After(20 * time.Second):
		t.Fatalf("the loop did not stop within 20s of SIGTERM during a catch-up; log:\n%s", errs.String())
	}
	cancel()
	<-feeding
	if got := contents(dir); got != "" {
		t.Fatalf("a stopped catch-up was written: %q", got)
	}
	if err := d.stopChild(syscall.SIGTERM); err != nil {
		t.Fatalf("stopChild: %v", err)
	}
}
