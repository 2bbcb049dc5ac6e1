package writer

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// pages splits full into pages of n changes in key order, as a paged
// snapshot from etcd arrives.
func pages(full map[string]string, n int) [][]Change {
	var out [][]Change
	var page []Change
	for _, k := range slices.Sorted(maps.Keys(full)) {
		page = append(page, put(k, full[k]))
		if len(page) == n {
			out, page = append(out, page), nil
		}
	}
	return append(out, page)
}

// syncPaged feeds every page of full to w and returns the last result.
func syncPaged(t testing.TB, w *Writer, full map[string]string, n int) Result {
	t.Helper()
	ps := pages(full, n)
	var res Result
	for i, p := range ps {
		var err error
		res, err = w.SyncPage(p, i == 0, i == len(ps)-1)
		if err != nil {
			t.Fatalf("SyncPage %d of %d: %v", i, len(ps), err)
		}
		if i < len(ps)-1 && res.Changed {
			t.Fatalf("SyncPage %d of %d: %+v before the last page, want nothing", i, len(ps), res)
		}
	}
	return res
}

func tenThousand(value string) map[string]string {
	want := make(map[string]string)
	for k := range benchKeys(10_000) {
		want[k] = value + k
	}
	return want
}

// TestSyncPageTenThousand (issue 10 item 3): a 10,000-key state synced
// page by page ends as Sync would leave it; in the atomic layout nothing
// of it is visible before the last page and it is one switch of ..data;
// the writer keeps no value once its file holds it; a paged sync with
// nothing new changes nothing; one change after it is one switch.
func TestSyncPageTenThousand(t *testing.T) {
	for _, layout := range []Layout{Atomic, Plain} {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			old := map[string]string{"key-00001": "old", "gone": "x"}
			mustSync(t, w, old)
			moves := watchMoves(t, opts.Dir)
			want := tenThousand("v")
			ps := pages(want, 1000)
			for i, p := range ps[:len(ps)-1] {
				if res, err := w.SyncPage(p, i == 0, false); err != nil || res.Changed {
					t.Fatalf("SyncPage %d = %+v, %v; want nothing yet", i, res, err)
				}
			}
			if layout == Atomic {
				wantFiles(t, opts.Dir, old)
			}
			res, err := w.SyncPage(ps[len(ps)-1], false, true)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Changed || res.Written != 10_000 || res.Removed != 1 {
				t.Fatalf("last page: %+v, want changed, 10000 written, 1 removed", res)
			}
			wantFiles(t, opts.Dir, want)
			if swaps := movesTo(t, moves, dataLink); layout == Atomic && swaps != 1 {
				t.Fatalf("..data switched %d times, want once", swaps)
			}
			for k, v := range w.desired {
				if v != nil {
					t.Fatalf("the writer still holds the value of %q after writing it", k)
				}
			}
			gens := genDirs(opts.Dir)
			if res := syncPaged(t, w, want, 700); res.Changed || res.Written != 0 || res.Removed != 0 {
				t.Fatalf("the same state again: %+v, want nothing changed", res)
			}
			if got := genDirs(opts.Dir); !slices.Equal(got, gens) || movesTo(t, moves, dataLink) != 0 {
				t.Fatalf("the same state again: generations %v, were %v, or ..data moved", got, gens)
			}
			want["key-00002"] = "changed"
			if res := mustApply(t, w, put("key-00002", "changed")); !res.Changed || res.Written != 1 {
				t.Fatalf("one change: %+v, want 1 written", res)
			}
			if swaps := movesTo(t, moves, dataLink); layout == Atomic && swaps != 1 {
				t.Fatalf("one change: ..data switched %d times, want once", swaps)
			}
			wantFiles(t, opts.Dir, want)
		})
	}
}

// TestSyncPageRestarted (issue 10 item 3): a paged sync read again from its
// first page discards what the first read built: the target goes from the
// old state to the new one in one switch, never shows a mix, and keeps no
// half-built generation.
func TestSyncPageRestarted(t *testing.T) {
	for _, layout := range []Layout{Atomic, Plain} {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			old := map[string]string{"a": "old", "z": "old"}
			mustSync(t, w, old)
			moves := watchMoves(t, opts.Dir)
			first := tenThousand("first")
			for i, p := range pages(first, 1000)[:5] {
				if _, err := w.SyncPage(p, i == 0, false); err != nil {
					t.Fatal(err)
				}
			}
			if layout == Atomic {
				wantFiles(t, opts.Dir, old)
			}
			second := tenThousand("second")
			if res := syncPaged(t, w, second, 1000); !res.Changed || res.Written != 10_000 {
				t.Fatalf("restarted sync: %+v, want 10000 written", res)
			}
			wantFiles(t, opts.Dir, second)
			if layout == Atomic {
				if swaps := movesTo(t, moves, dataLink); swaps != 1 {
					t.Fatalf("..data switched %d times, want once", swaps)
				}
				if gens := genDirs(opts.Dir); len(gens) != 1 {
					t.Fatalf("generations = %v, want only the current one", gens)
				}
			}
			if _, err := w.SyncPage([]Change{put("zz", "late")}, false, true); !errors.Is(err, ErrResync) {
				t.Fatalf("a page after the last one: err = %v, want ErrResync", err)
			}
			wantFiles(t, opts.Dir, second)
		})
	}
}

// TestSyncPageConflict: a key that turns out, pages later, to be the
// directory of another key is rejected, and written once the other key is
// deleted, with its own content, though the writer kept only its digest.
func TestSyncPageConflict(t *testing.T) {
	for _, layout := range []Layout{Atomic, Plain} {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			steps := [][]Change{{put("a", "file a")}, {put("a-b", "x"), put("a.c", "y")}, {put("a/b", "below a"), put("b", "b")}}
			for i, p := range steps {
				res, err := w.SyncPage(p, i == 0, i == len(steps)-1)
				if err != nil {
					t.Fatal(err)
				}
				if i == len(steps)-1 && (len(res.Rejected) != 1 || res.Rejected[0].Key != "a" || res.Rejected[0].Reason != ReasonConflict) {
					t.Fatalf("rejected = %v, want a as a conflict", res.Rejected)
				}
			}
			wantFiles(t, opts.Dir, map[string]string{"a-b": "x", "a.c": "y", "a/b": "below a", "b": "b"})
			mustApply(t, w, del("a/b"))
			wantFiles(t, opts.Dir, map[string]string{"a": "file a", "a-b": "x", "a.c": "y", "b": "b"})
		})
	}
}

// TestDroppedValues: the writer keeps a digest, not the value, of what it
// wrote. When it must write such a file again (the disk is not as it left
// it) it reads the content back from the file it wrote, checked against the
// digest; if that file was damaged too, it asks for a full sync
// (ErrResync), and Sync repairs the target.
func TestDroppedValues(t *testing.T) {
	opts := testOptions(t, Atomic)
	w := newWriter(t, opts)
	full := map[string]string{"x": "content of x", "d/y": "content of y"}
	mustSync(t, w, full)
	gen := filepath.Join(opts.Dir, dataTarget(t, opts.Dir))
	if err := os.Remove(filepath.Join(opts.Dir, dataLink)); err != nil {
		t.Fatal(err)
	}
	full["z"] = "new"
	if res := mustApply(t, w, put("z", "new")); !res.Changed {
		t.Fatalf("Apply after ..data vanished: %+v, want changed", res)
	}
	wantFiles(t, opts.Dir, full)

	gen = filepath.Join(opts.Dir, dataTarget(t, opts.Dir))
	if err := os.WriteFile(filepath.Join(gen, "x"), []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(opts.Dir, dataLink)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Apply([]Change{put("z", "newer")}); !errors.Is(err, ErrResync) {
		t.Fatalf("Apply with x damaged and ..data gone: err = %v, want ErrResync", err)
	}
	full["z"] = "newer"
	mustSync(t, w, full)
	wantFiles(t, opts.Dir, full)
}

// TestTidyAfterApply (issue 10 item 4): Apply leaves the retired generation
// it replaced by a fresh one for Tidy, so the caller can signal first;
// Tidy removes it, and the next Apply does if the caller did not.
func TestTidyAfterApply(t *testing.T) {
	opts := testOptions(t, Atomic)
	opts.ReuseAfter = -1 // a fresh generation every time
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"a": "0"})
	mustApply(t, w, put("a", "1"))
	mustApply(t, w, put("a", "2"))
	if gens := genDirs(opts.Dir); len(gens) != 3 {
		t.Fatalf("after Apply: generations %v, want current, retired and the one left for Tidy", gens)
	}
	w.Tidy()
	if gens := genDirs(opts.Dir); len(gens) != 2 {
		t.Fatalf("after Tidy: generations %v, want current and retired", gens)
	}
	mustApply(t, w, put("a", "3"))
	mustApply(t, w, put("a", "4"))
	if gens := genDirs(opts.Dir); len(gens) != 3 {
		t.Fatalf("generations %v, want 3", gens)
	}
	wantFiles(t, opts.Dir, map[string]string{"a": "4"})
}
