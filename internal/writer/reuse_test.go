package writer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClock makes w read the time from the returned variable.
func fakeClock(w *Writer) *time.Time {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	w.now = func() time.Time { return now }
	return &now
}

func inodeOf(t *testing.T, name string) uint64 {
	t.Helper()
	fi, err := os.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func fdInode(t *testing.T, f interface{ Stat() (fs.FileInfo, error) }) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func dataTarget(t *testing.T, dir string) string {
	t.Helper()
	g, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// retiredName returns the one generation ..data does not point at.
func retiredName(t *testing.T, dir string) string {
	t.Helper()
	cur := dataTarget(t, dir)
	gens := slices.DeleteFunc(genDirs(dir), func(g string) bool { return g == cur })
	if len(gens) != 1 {
		t.Fatalf("generations besides %s = %v, want one retired", cur, gens)
	}
	return gens[0]
}

// readRoot reads a and n/b relative to the directory r holds open.
func readRoot(r *os.Root) (string, string, error) {
	a, err := r.ReadFile("a")
	if err != nil {
		return "", "", err
	}
	b, err := r.ReadFile("n/b")
	return string(a), string(b), err
}

// TestReaderPromise holds the atomic layout to the package doc's promise,
// with a clock the test moves: a generation that "..data" left less than
// ReuseAfter ago is never changed (a reader holding it open reads its own
// change set, or finds the files gone); one left ReuseAfter ago is reused
// under a new name, so its old name fails, and costs only the changed
// files (the unchanged one keeps its inode).
func TestReaderPromise(t *testing.T) {
	opts := testOptions(t, Atomic)
	opts.ReuseAfter = time.Minute
	w := newWriter(t, opts)
	clock := fakeClock(w)
	both := func(v string) []Change { return []Change{put("a", v), put("n/b", v)} }
	mustSync(t, w, map[string]string{"a": "0", "n/b": "0", "c": "keep"})
	keep := inodeOf(t, filepath.Join(opts.Dir, dataLink, "c"))

	mustApply(t, w, both("1")...)
	r1, err := os.OpenRoot(filepath.Join(opts.Dir, dataLink))
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	ino1 := inodeOf(t, filepath.Join(opts.Dir, dataTarget(t, opts.Dir)))
	mustApply(t, w, both("2")...) // r1's generation retired now
	*clock = clock.Add(opts.ReuseAfter - time.Nanosecond)
	mustApply(t, w, both("3")...) // too early to reuse it
	if a, b, err := readRoot(r1); !errors.Is(err, fs.ErrNotExist) && (err != nil || a != "1" || b != "1") {
		t.Fatalf("reader holding generation 1 within ReuseAfter: a=%q b=%q err=%v; want 1, 1 or gone", a, b, err)
	}
	if got := inodeOf(t, filepath.Join(opts.Dir, dataTarget(t, opts.Dir))); got == ino1 {
		t.Fatal("generation 1 was reused before ReuseAfter passed")
	}

	r3, err := os.OpenRoot(filepath.Join(opts.Dir, dataLink))
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	g3 := dataTarget(t, opts.Dir)
	ino3 := inodeOf(t, filepath.Join(opts.Dir, g3))
	mustApply(t, w, both("4")...) // generation 3 retired now
	*clock = clock.Add(w.opts.ReuseAfter)
	res := mustApply(t, w, both("5")...)
	if !res.Changed || res.Written != 2 || res.Removed != 0 {
		t.Fatalf("Apply after ReuseAfter = %+v, want changed, 2 written", res)
	}
	g5 := dataTarget(t, opts.Dir)
	if g5 == g3 || inodeOf(t, filepath.Join(opts.Dir, g5)) != ino3 {
		t.Fatalf("..data → %s (was %s): want generation 3 reused under a new name", g5, g3)
	}
	if a, b, err := readRoot(r3); err != nil || a != "5" || b != "5" {
		t.Fatalf("reused generation: a=%q b=%q err=%v; want the whole change set 5", a, b, err)
	}
	if _, err := os.ReadFile(filepath.Join(opts.Dir, g3, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old name of the reused generation: %v, want not exist", err)
	}
	if got := inodeOf(t, filepath.Join(opts.Dir, dataLink, "c")); got != keep {
		t.Fatalf("unchanged file c: inode %d → %d, want kept", keep, got)
	}
	wantFiles(t, opts.Dir, map[string]string{"a": "5", "n/b": "5", "c": "keep"})
	if gens := genDirs(opts.Dir); len(gens) != 2 {
		t.Fatalf("generations = %v, want the current one and the retired one", gens)
	}
}

// TestReaderNeverSeesMixWithReuse: readers resolve ..data once (holding the
// directory open, or reading the link and opening files by the
// generation's name) and read two files while batches rewrite both, every
// other batch after ReuseAfter has passed so that generations are reused.
// Every pair read within ReuseAfter must come from one batch.
func TestReaderNeverSeesMixWithReuse(t *testing.T) {
	opts := testOptions(t, Atomic)
	opts.ReuseAfter = 50 * time.Millisecond
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"cert": "v0", "nested/key": "v0"})

	byName := func(dir string) (string, string, error) {
		g, err := os.Readlink(filepath.Join(dir, dataLink))
		if err != nil {
			return "", "", err
		}
		a, err := os.ReadFile(filepath.Join(dir, g, "cert"))
		if err != nil {
			return "", "", err
		}
		b, err := os.ReadFile(filepath.Join(dir, g, "nested/key"))
		return string(a), string(b), err
	}
	type stats struct {
		name                       string
		consistent, vanished, slow int
		err                        error
	}
	done := make(chan struct{})
	results := make(chan stats, 2)
	for name, read := range map[string]func(string) (string, string, error){"holding ..data open": readPair, "by the generation's name": byName} {
		go func() {
			st := stats{name: name}
			deadline := time.Now().Add(time.Minute)
			for i := 0; i < 1_000_000 && time.Now().Before(deadline) && st.err == nil; i++ {
				select {
				case <-done:
					results <- st
					return
				default:
				}
				start := time.Now()
				a, b, err := read(opts.Dir)
				switch {
				case errors.Is(err, fs.ErrNotExist):
					st.vanished++
				case err != nil:
					st.err = err
				case a == b:
					st.consistent++
				case time.Since(start) >= opts.ReuseAfter:
					st.slow++ // outside the promise
				default:
					st.err = fmt.Errorf("mixed read within ReuseAfter: cert=%q nested/key=%q", a, b)
				}
			}
			<-done
			results <- st
		}()
	}
	for i := 1; i <= 30; i++ {
		if i%2 == 0 {
			// Time must pass for a retired generation to be reused: this
			// is the workload, not a wait for the readers.
			time.Sleep(opts.ReuseAfter)
		}
		v := "v" + strconv.Itoa(i)
		if res := mustApply(t, w, put("cert", v), put("nested/key", v)); res.Written != 2 {
			t.Fatalf("batch %d: %+v, want 2 written", i, res)
		}
	}
	close(done)
	for range 2 {
		st := <-results
		if st.err != nil {
			t.Fatal(st.err)
		}
		if st.consistent == 0 {
			t.Fatalf("a reader made no complete read (%d vanished)", st.vanished)
		}
		t.Logf("reader %s: %d consistent, %d vanished, %d slower than ReuseAfter", st.name, st.consistent, st.vanished, st.slow)
	}
	if w.reuses < 15 {
		t.Fatalf("%d batches reused a generation, want at least the 15 after ReuseAfter", w.reuses)
	}
	t.Logf("%d batches reused a generation", w.reuses)
}

// TestReuseRefusesSwappedGeneration: a user who can write into the target
// exchanges the retired generation's name with their directory, or with a
// symlink to it, before it is due for reuse. The writer must leave what it
// finds there alone and build a fresh generation.
func TestReuseRefusesSwappedGeneration(t *testing.T) {
	for _, swap := range []string{"directory", "symlink"} {
		t.Run(swap, func(t *testing.T) {
			opts := testOptions(t, Atomic)
			w := newWriter(t, opts)
			clock := fakeClock(w)
			mustSync(t, w, map[string]string{"a": "0", "b": "0"})
			v := plantVictims(t, opts.Dir)
			mustApply(t, w, put("a", "1"))
			retired := retiredName(t, opts.Dir)
			switch swap {
			case "directory":
				if !exchange(opts.Dir, retired, "private") {
					t.Fatal("exchange failed")
				}
			case "symlink":
				if err := os.Symlink("private", filepath.Join(opts.Dir, "lnk")); err != nil {
					t.Fatal(err)
				}
				if !exchange(opts.Dir, retired, "lnk") {
					t.Fatal("exchange failed")
				}
			}
			*clock = clock.Add(w.opts.ReuseAfter)
			res := mustApply(t, w, put("b", "1"))
			if !res.Changed || res.Written != 1 || w.reuses != 0 {
				t.Fatalf("Apply = %+v, %d reuses; want changed, 1 written, a fresh generation", res, w.reuses)
			}
			v.check(t, "after Apply")
			// Without the swap, the next change set reuses the retired one.
			*clock = clock.Add(w.opts.ReuseAfter)
			mustApply(t, w, put("b", "2"))
			if w.reuses != 1 {
				t.Fatalf("%d reuses after a change set without a swap, want 1", w.reuses)
			}
			v.check(t, "after the second Apply")
			if names, _ := v.private.Readdirnames(-1); !slices.Equal(names, []string{"data"}) {
				t.Fatalf("victim directory holds %v, want [data]", names)
			}
			if got := inodeOf(t, filepath.Join(opts.Dir, dataTarget(t, opts.Dir))); got == fdInode(t, v.private) {
				t.Fatal("..data points at the victim's directory")
			}
			for k, want := range map[string]string{"a": "1", "b": "1"} {
				if want == "1" && k == "b" {
					want = "2"
				}
				if b, err := os.ReadFile(filepath.Join(opts.Dir, k)); err != nil || string(b) != want {
					t.Fatalf("%s = %q, %v; want %q", k, b, err, want)
				}
			}
		})
	}
}

// TestReuseReplacesChangedFiles: in the retired generation, a file of a key
// that changed since is rewritten in place (its directory does not change);
// reuse must replace it, not trust it. An entry replaced at the top of the
// retired generation (its directory changes) makes the writer build a
// fresh generation instead of trusting the others.
func TestReuseReplacesChangedFiles(t *testing.T) {
	t.Run("changed-key", func(t *testing.T) {
		opts := testOptions(t, Atomic)
		w := newWriter(t, opts)
		clock := fakeClock(w)
		mustSync(t, w, map[string]string{"a": "0", "b": "0", "c": "keep"})
		mustApply(t, w, put("a", "1"))
		retired := retiredName(t, opts.Dir)
		ino := inodeOf(t, filepath.Join(opts.Dir, retired))
		p := filepath.Join(opts.Dir, retired, "a")
		if err := os.WriteFile(p, []byte("evil"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		*clock = clock.Add(w.opts.ReuseAfter)
		mustApply(t, w, put("b", "1"))
		if got := inodeOf(t, filepath.Join(opts.Dir, dataTarget(t, opts.Dir))); got != ino {
			t.Fatal("the retired generation was not reused")
		}
		wantFiles(t, opts.Dir, map[string]string{"a": "1", "b": "1", "c": "keep"})
		if fi, err := os.Stat(filepath.Join(opts.Dir, "a")); err != nil || fi.Mode() != 0o600 {
			t.Fatalf("a: %v, %v; want mode 0600", fi, err)
		}
	})
	t.Run("entry-replaced", func(t *testing.T) {
		opts := testOptions(t, Atomic)
		w := newWriter(t, opts)
		clock := fakeClock(w)
		mustSync(t, w, map[string]string{"a": "0", "c": "keep"})
		mustApply(t, w, put("a", "1"))
		retired := retiredName(t, opts.Dir)
		ino := inodeOf(t, filepath.Join(opts.Dir, retired))
		p := filepath.Join(opts.Dir, retired, "c")
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("evil"), 0o600); err != nil {
			t.Fatal(err)
		}
		*clock = clock.Add(w.opts.ReuseAfter)
		mustApply(t, w, put("a", "2"))
		if got := inodeOf(t, filepath.Join(opts.Dir, dataTarget(t, opts.Dir))); got == ino || w.reuses != 0 {
			t.Fatal("a retired generation whose entries changed was reused")
		}
		wantFiles(t, opts.Dir, map[string]string{"a": "2", "c": "keep"})
	})
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

// movesTo drains fd and counts the events naming name. The kernel queues
// an event when the rename happens, so after Apply returns they are there.
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

// TestTenThousandKeysOneChange (issue 10 item 2): under a 10,000-key
// target a change is still one atomic switch of ..data and one Changed, in
// both layouts, whether the atomic layout reuses the retired generation or
// builds a fresh one.
func TestTenThousandKeysOneChange(t *testing.T) {
	cases := []struct {
		name   string
		layout Layout
		reuse  time.Duration
	}{{"atomic-reuse", Atomic, time.Nanosecond}, {"atomic-fresh", Atomic, -1}, {"plain", Plain, 0}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := testOptions(t, c.layout)
			opts.ReuseAfter = c.reuse
			w := newWriter(t, opts)
			want := make(map[string]string)
			for k, v := range benchKeys(10_000) {
				want[k] = string(v)
			}
			mustSync(t, w, want)
			moves := watchMoves(t, opts.Dir)
			step := func(what string, wantWritten, wantRemoved int, changes ...Change) {
				t.Helper()
				for _, ch := range changes {
					if ch.Delete {
						delete(want, ch.Key)
					} else {
						want[ch.Key] = string(ch.Value)
					}
				}
				res := mustApply(t, w, changes...)
				if !res.Changed || res.Written != wantWritten || res.Removed != wantRemoved {
					t.Fatalf("%s: %+v, want changed, %d written, %d removed", what, res, wantWritten, wantRemoved)
				}
				swaps, wantSwaps := movesTo(t, moves, dataLink), 1
				if c.layout == Plain {
					wantSwaps = 0
				}
				if swaps != wantSwaps {
					t.Fatalf("%s: ..data switched %d times, want %d", what, swaps, wantSwaps)
				}
				if res := mustApply(t, w); res.Changed {
					t.Fatalf("%s: Apply(nil) after it = %+v, want unchanged", what, res)
				}
			}
			for i := range 4 {
				step(fmt.Sprint("put ", i), 1, 0, put("key-00001", fmt.Sprint("v", i)))
			}
			var batch []Change
			for i := range 100 {
				batch = append(batch, put(fmt.Sprintf("key-%05d", 100+i), "batch"))
			}
			step("100 puts", 100, 0, batch...)
			step("new nested key and a delete", 1, 1, put("new/sub/x", "n"), del("key-00002"))
			step("file where a directory was", 1, 1, del("new/sub/x"), put("new/sub", "f"))
			step("directory where a file was", 1, 1, del("new/sub"), put("new/sub/y", "g"))
			step("a directory of two keys", 2, 0, put("two/sub/a", "a"), put("two/sub/b", "b"))
			step("the directory emptied", 0, 2, del("two/sub/a"), del("two/sub/b"))
			step("conflicting key", 0, 1, put("new", "conflict"), del("key-00003"))
			delete(want, "new") // rejected: it is the directory of new/sub/y
			wantFiles(t, opts.Dir, want)
			switch {
			case c.name == "atomic-reuse" && w.reuses != 10:
				t.Fatalf("%d of 11 change sets reused a generation, want all but the first", w.reuses)
			case c.name == "atomic-fresh" && w.reuses > 0:
				t.Fatalf("%d change sets reused a generation with ReuseAfter < 0", w.reuses)
			}
			w.Tidy()
			if c.layout == Atomic && len(genDirs(opts.Dir)) != 2 {
				t.Fatalf("generations = %v, want the current and the retired one", genDirs(opts.Dir))
			}
		})
	}
}
