package writer

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fuzzKeys are the keys FuzzApply picks from: valid ones that nest and
// conflict, hostile ones, and ones crossing the planted symlinks p and q.
var fuzzKeys = []string{
	"a", "b", "a/b", "a/c", "a/b/c", "c/d/e", "r", "p", "p/x", "q/y",
	"../esc", "/abs", "a//b", "..data", "..2026_01_01_00_00_00.000000000", "",
	".", "x/..", "s/..tmp-z", "sub/../x", "..dispenser-manifest", "a/",
}

// FuzzApply applies random batches and checks after each one that the files
// visible in the target are exactly the valid desired keys and that nothing
// outside the target changed. Input: byte 0 picks the layout (bit 0) and
// whether a retired generation is reused at once (bit 1); then pairs of
// (key index, action): action 0-199 puts, 200-239 deletes, 240-249 ends the
// batch, 250-255 restarts with a new Writer and Sync.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 240, 0, 200, 240})
	f.Add([]byte{1, 0, 1, 2, 3, 240, 2, 210, 0, 5, 250, 3, 4, 240})
	f.Add([]byte{0, 8, 1, 9, 2, 7, 3, 250, 8, 200, 240, 7, 201, 240})
	f.Add([]byte{1, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 240, 1, 255})
	f.Add([]byte{0, 4, 1, 5, 2, 3, 3, 240, 4, 200, 5, 200, 240, 3, 200, 250})
	f.Add([]byte{2, 0, 1, 2, 3, 240, 0, 200, 240, 1, 5, 240, 2, 6, 240, 0, 7, 240})
	f.Add([]byte{2, 2, 1, 240, 3, 1, 240, 2, 200, 240, 0, 1, 240, 3, 200, 240, 1, 200, 240})
	// reuse empties a directory of two keys
	f.Add([]byte{2, 2, 1, 3, 1, 0, 240, 1, 1, 0, 240, 2, 200, 3, 200, 0, 240, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 || len(data) > 400 {
			return
		}
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		writeRaw(t, outside, "sentinel", "untouched")
		opts := Options{Dir: filepath.Join(base, "target"), Layout: Layout(data[0] % 2), UID: -1, GID: -1}
		if data[0]&2 != 0 {
			opts.ReuseAfter = time.Nanosecond
		}
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, target := range map[string]string{"p": "../outside", "q": outside} {
			if err := os.Symlink(target, filepath.Join(opts.Dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		w := newWriter(t, opts)
		desired := make(map[string][]byte)
		var batch []Change
		step := func(restart bool) {
			var res Result
			var err error
			if restart {
				w = newWriter(t, opts)
				res, err = w.Sync(desired)
			} else {
				res, err = w.Apply(batch)
			}
			if err != nil {
				t.Fatalf("after %d changes: %v", len(batch), err)
			}
			if w.reuseFailures != 0 {
				t.Fatalf("after %d changes: a retired generation failed to update", len(batch))
			}
			batch = nil
			_, rejected := partition(desired)
			got := slices.DeleteFunc(res.Rejected, func(r Rejection) bool { return r.Reason == ReasonUnwritable })
			if !slices.EqualFunc(got, rejected, func(a, b Rejection) bool { return a.Error() == b.Error() && a.Reason == b.Reason }) {
				t.Fatalf("Rejected = %v, want %v", got, rejected)
			}
			checkFuzzState(t, base, opts.Dir, desired)
		}
		for i := 1; i+1 < len(data); i += 2 {
			key, action := fuzzKeys[int(data[i])%len(fuzzKeys)], data[i+1]
			switch {
			case action < 200:
				v := []byte("v" + strconv.Itoa(int(action)))
				batch = append(batch, Change{Key: key, Value: v})
				desired[key] = v
			case action < 240:
				batch = append(batch, Change{Key: key, Delete: true})
				delete(desired, key)
			default:
				step(action >= 250)
			}
		}
		step(false)
	})
}

func checkFuzzState(t *testing.T, base, dir string, desired map[string][]byte) {
	t.Helper()
	want := make(map[string]string)
	valid, _ := partition(desired)
	for _, k := range valid {
		want[k] = string(desired[k])
	}
	got, err := visibleManaged(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("files = %s, want %s", summary(got), summary(want))
	}
	wantFiles(t, filepath.Join(base, "outside"), map[string]string{"sentinel": "untouched"})
	entries, _ := os.ReadDir(base)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, ","), "outside,target"; got != want {
		t.Fatalf("entries next to the target = %s, want %s", got, want)
	}
}

// visibleManaged is visible without the symlinks the test planted: it skips
// top-level symlinks not pointing into ..data.
func visibleManaged(dir string) (map[string]string, error) {
	all, err := visible(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		if t, _ := os.Readlink(filepath.Join(dir, e.Name())); t != dataLink+"/"+e.Name() {
			for _, k := range slices.Collect(maps.Keys(all)) {
				if k == e.Name() || strings.HasPrefix(k, e.Name()+"/") {
					delete(all, k)
				}
			}
		}
	}
	return all, nil
}
