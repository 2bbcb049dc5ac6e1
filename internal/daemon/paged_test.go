package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dispenser-dev/dispenser/internal/watch"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// pagedDaemon returns a daemon writing to a fresh directory in layout,
// with the test binary as its child (not started).
func pagedDaemon(t *testing.T, layout writer.Layout) (d *Daemon, dir string, out, errs *lines) {
	t.Helper()
	dir = t.TempDir()
	errs, out = newLines(), newLines()
	log := slog.New(slog.NewTextHandler(errs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := writer.New(writer.Options{Dir: dir, Layout: layout, UID: -1, GID: -1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sigs := Subscribe()
	t.Cleanup(sigs.Stop)
	d = New(Options{Target: dir, Writer: w, Signal: syscall.SIGHUP, KillTimeout: 10 * time.Second,
		Argv: childArgv(dir), Stdout: out, Stderr: errs, Logger: log, Signals: sigs})
	return d, dir, out, errs
}

// snapshotPages returns n keys as a paged snapshot at rev, size keys a page.
func snapshotPages(rev int64, n, size int, value string) []watch.Batch {
	var out []watch.Batch
	for i := 0; i < n; i += size {
		b := watch.Batch{Rev: rev, Reset: true, Cause: watch.CauseInitial, Page: len(out), Partial: i+size < n}
		for k := i; k < min(i+size, n); k++ {
			b.Changes = append(b.Changes, watch.Change{Key: fmt.Sprintf("key-%05d", k), Value: []byte(value)})
		}
		out = append(out, b)
	}
	return out
}

// send hands b to the daemon, failing after waitLong.
func send(t *testing.T, batches chan<- watch.Batch, b watch.Batch) {
	t.Helper()
	select {
	case batches <- b:
	case <-time.After(waitLong):
		t.Fatalf("the daemon did not take batch rev %d page %d within %v", b.Rev, b.Page, waitLong)
	}
}

// firstSyncOf runs firstSync on batches in the background.
func firstSyncOf(ctx context.Context, d *Daemon, batches <-chan watch.Batch) <-chan error {
	done := make(chan error, 1)
	go func() {
		sig, err := d.firstSync(ctx, batches)
		if err == nil && sig != nil {
			err = fmt.Errorf("firstSync stopped by %v", sig)
		}
		done <- err
	}()
	return done
}

// TestPagedSyncRestarted (issue 10 item 3): the first snapshot comes in
// pages and its read is restarted midway (Page 0 again, another revision,
// other values). Nothing is visible before the last page of the second
// read, then exactly its state; no half-built generation is left; the
// child starts once, on that state.
func TestPagedSyncRestarted(t *testing.T) {
	for _, layout := range []writer.Layout{writer.Atomic, writer.Plain} {
		t.Run(layout.String(), func(t *testing.T) {
			d, dir, out, errs := pagedDaemon(t, layout)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			batches := make(chan watch.Batch)
			done := firstSyncOf(ctx, d, batches)
			for _, b := range snapshotPages(10, 5000, 1000, "first")[:3] {
				send(t, batches, b)
				if got := contents(dir); got != "" {
					t.Fatalf("after page %d of the first read: files visible: %.60q", b.Page, got)
				}
			}
			second := snapshotPages(11, 4500, 1000, "second")
			for _, b := range second {
				if got := contents(dir); got != "" {
					t.Fatalf("before page %d of the second read: files visible: %.60q", b.Page, got)
				}
				send(t, batches, b)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(waitLong):
				t.Fatalf("no first sync within %v; log:\n%s", waitLong, errs.String())
			}
			got := contents(dir)
			if n := strings.Count(got, "=second"); n != 4500 || strings.Contains(got, "first") {
				t.Fatalf("after the sync: %d files of the second read (want 4500), first read's values there: %v", n, strings.Contains(got, "first"))
			}
			if layout == writer.Atomic {
				if gens := genDirs(t, dir); len(gens) != 1 {
					t.Fatalf("generations = %v, want one", gens)
				}
			}
			if err := d.startChild(); err != nil {
				t.Fatal(err)
			}
			if ready := out.next(t, "ready"); strings.Count(ready, "=second") != 4500 {
				t.Fatalf("the child started on %d files of the second read, want 4500", strings.Count(ready, "=second"))
			}
			if err := d.stopChild(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(out.String(), "ready"); n != 1 {
				t.Fatalf("the child started %d times, want once", n)
			}
		})
	}
}

// TestTenThousandKeysOneSignal (issue 10): under a 10,000-key prefix
// synced in pages, each change is one switch of ..data (atomic layout)
// and one signal, with the child seeing the change, in both layouts.
func TestTenThousandKeysOneSignal(t *testing.T) {
	for _, layout := range []writer.Layout{writer.Atomic, writer.Plain} {
		t.Run(layout.String(), func(t *testing.T) {
			d, dir, out, errs := pagedDaemon(t, layout)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			batches := make(chan watch.Batch)
			done := firstSyncOf(ctx, d, batches)
			for _, b := range snapshotPages(10, 10_000, 1000, "v") {
				send(t, batches, b)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := d.startChild(); err != nil {
				t.Fatal(err)
			}
			out.next(t, "ready")
			d.childStart = time.Now().Add(-startGrace) // no hold-back of the signal
			moves := watchMoves(t, dir)
			result := make(chan os.Signal, 1)
			go func() { result <- d.loop(ctx, batches) }()
			for i, key := range []string{"key-00001", "key-09999", "zz-new"} {
				value := fmt.Sprint("changed-", i)
				send(t, batches, watch.Batch{Rev: int64(20 + i), Changes: []watch.Change{{Key: key, Value: []byte(value)}}})
				hup := out.next(t, "HUP")
				if !strings.Contains(hup, key+"="+value) {
					t.Fatalf("change %d: the child's HUP did not see %s=%s", i, key, value)
				}
				if swaps, want := movesTo(t, moves, "..data"), map[bool]int{true: 1, false: 0}[layout == writer.Atomic]; swaps != want {
					t.Fatalf("change %d: ..data switched %d times, want %d", i, swaps, want)
				}
			}
			cancel()
			select {
			case <-result:
			case <-time.After(waitLong):
				t.Fatalf("loop did not stop; log:\n%s", errs.String())
			}
			if err := d.stopChild(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(out.String(), "\nHUP"); n != 3 {
				t.Fatalf("the child got %d HUPs for 3 changes, want 3", n)
			}
		})
	}
}

func genDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, "..") && len(n) > 2 && n[2] >= '0' && n[2] <= '9' {
			gens = append(gens, n)
		}
	}
	return gens
}

// watchMoves returns a non-blocking inotify descriptor reporting entries
// renamed into dir.
func watchMoves(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	return fd
}

// movesTo drains fd and counts the renames onto name. The kernel queues
// the event at the rename, which came before the signal the test saw.
func movesTo(t *testing.T, fd int, name string) int {
	t.Helper()
	n := 0
	buf := make([]byte, 64<<10)
	for range 1000 {
		got, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= got; {
			l := int(binary.NativeEndian.Uint32(buf[off+12:]))
			if strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+l]), "\x00") == name {
				n++
			}
			off += unix.SizeofInotifyEvent + l
		}
	}
	t.Fatal("inotify queue never drained")
	return n
}
