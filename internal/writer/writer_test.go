package writer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestAtomicStructure(t *testing.T) {
	opts := testOptions(t, Atomic)
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"tls.crt": "c", "nginx/site.conf": "s", "nginx/sub/x": "x"})
	gen, err := os.Readlink(filepath.Join(opts.Dir, "..data"))
	if err != nil || !isGenName(gen) || filepath.IsAbs(gen) {
		t.Fatalf("..data → %q, %v; want a relative generation name", gen, err)
	}
	for _, name := range []string{"tls.crt", "nginx"} {
		if got, err := os.Readlink(filepath.Join(opts.Dir, name)); err != nil || got != "..data/"+name {
			t.Fatalf("Readlink(%s) = %q, %v; want ..data/%s", name, got, err, name)
		}
	}
	if fi, err := os.Lstat(filepath.Join(opts.Dir, gen, "nginx", "sub")); err != nil || !fi.IsDir() {
		t.Fatalf("nested directory in generation: %v, %v", fi, err)
	}
	wantFiles(t, opts.Dir, map[string]string{"tls.crt": "c", "nginx/site.conf": "s", "nginx/sub/x": "x"})
	if got := genDirs(opts.Dir); len(got) != 1 || got[0] != gen {
		t.Fatalf("generations = %v, want [%s]", got, gen)
	}
}

func TestNestedDeletesRemoveEmptyDirs(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"a/b/c": "1", "a/d": "2", "x": "3"})
			res := mustApply(t, w, del("a/b/c"))
			if !res.Changed || res.Removed != 1 || res.Written != 0 {
				t.Fatalf("delete a/b/c: %+v, want changed, 1 removed, 0 written", res)
			}
			wantFiles(t, opts.Dir, map[string]string{"a/d": "2", "x": "3"})
			if _, err := os.Lstat(filepath.Join(opts.Dir, "a", "b")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a/b after its last file was deleted: %v, want not exist", err)
			}
			mustApply(t, w, del("a/d"), del("x"))
			wantFiles(t, opts.Dir, map[string]string{})
			if _, err := os.Lstat(filepath.Join(opts.Dir, "a")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a after all its files were deleted: %v, want not exist", err)
			}
			if fi, err := os.Stat(opts.Dir); err != nil || !fi.IsDir() {
				t.Fatalf("target after deleting everything: %v, %v", fi, err)
			}
		})
	}
}

func TestConflictResolvesOnDelete(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			res := mustSync(t, w, map[string]string{"a": "file", "a/b": "nested"})
			if len(res.Rejected) != 1 || res.Rejected[0].Key != "a" || res.Rejected[0].Reason != ReasonConflict {
				t.Fatalf("Rejected = %v, want a as conflict", res.Rejected)
			}
			wantFiles(t, opts.Dir, map[string]string{"a/b": "nested"})
			res = mustApply(t, w, del("a/b"))
			if !res.Changed || len(res.Rejected) != 0 {
				t.Fatalf("after deleting a/b: %+v, want changed and nothing rejected", res)
			}
			wantFiles(t, opts.Dir, map[string]string{"a": "file"})
			mustApply(t, w, put("a/c", "again"))
			wantFiles(t, opts.Dir, map[string]string{"a/c": "again"})
		})
	}
}

func TestNoopPut(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"a": "1", "d/b": "2"})
			before := inodes(t, opts.Dir)
			link, _ := os.Readlink(filepath.Join(opts.Dir, "..data"))
			res := mustApply(t, w, put("a", "1"), put("d/b", "2"))
			if res.Changed || res.Written != 0 || res.Removed != 0 {
				t.Fatalf("no-op put: %+v, want nothing changed", res)
			}
			res = mustSync(t, w, map[string]string{"a": "1", "d/b": "2"})
			if res.Changed || res.Written != 0 || res.Removed != 0 {
				t.Fatalf("no-op Sync: %+v, want nothing changed", res)
			}
			if after, _ := os.Readlink(filepath.Join(opts.Dir, "..data")); after != link {
				t.Fatalf("..data moved from %q to %q on a no-op", link, after)
			}
			if after := inodes(t, opts.Dir); !slices.Equal(after, before) {
				t.Fatalf("inodes changed on a no-op: %v → %v", before, after)
			}
		})
	}
}

// inodes returns the inode numbers of the visible files a and d/b.
func inodes(t *testing.T, dir string) []uint64 {
	t.Helper()
	var ids []uint64
	for _, name := range []string{"a", "d/b"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, fi.Sys().(*syscall.Stat_t).Ino)
	}
	return ids
}

func TestUnchangedFilesAreLinked(t *testing.T) {
	opts := testOptions(t, Atomic)
	w := newWriter(t, opts)
	mustSync(t, w, map[string]string{"a": "1", "d/b": "2"})
	before := inodes(t, opts.Dir)
	res := mustApply(t, w, put("a", "changed"))
	if !res.Changed || res.Written != 1 {
		t.Fatalf("Apply: %+v, want changed, 1 written", res)
	}
	after := inodes(t, opts.Dir)
	if after[0] == before[0] || after[1] != before[1] {
		t.Fatalf("inodes %v → %v: want a new, d/b kept", before, after)
	}
	// The generation before is kept as the retired one, for reuse.
	if gens := genDirs(opts.Dir); len(gens) != 2 {
		t.Fatalf("generations = %v, want the current one and the retired one", gens)
	}
}

func TestStaleCleanupAcrossProcesses(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			first := newWriter(t, opts)
			mustSync(t, first, map[string]string{"a": "1", "b": "2", "n/c": "3", "keep/own": "4"})
			unmanaged := map[string]string{"user.conf": "mine", "keep/theirs": "theirs", "other/x": "y"}
			for name, v := range unmanaged {
				writeRaw(t, opts.Dir, name, v)
			}
			second := newWriter(t, opts)
			res := mustSync(t, second, map[string]string{"a": "1"})
			// In the atomic layout keep/ is a symlink into the generation,
			// so keep/theirs was written into it and goes with it.
			wantRemoved := map[Layout]int{Atomic: 4, Plain: 3}[layout]
			if !res.Changed || res.Removed != wantRemoved || res.Written != 0 {
				t.Fatalf("second Sync: %+v, want changed, %d removed, 0 written", res, wantRemoved)
			}
			want := map[string]string{"a": "1"}
			if layout == Plain { // a plain layout shares keep/ with the user
				want["keep/theirs"] = "theirs"
			}
			for _, name := range []string{"user.conf", "other/x"} {
				want[name] = unmanaged[name]
			}
			gotVisible, err := visible(opts.Dir)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if gotVisible[k] != v {
					t.Fatalf("%s = %q, want %q (all: %s)", k, gotVisible[k], v, summary(gotVisible))
				}
			}
			if _, err := os.Lstat(filepath.Join(opts.Dir, "n")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("stale directory n: %v, want removed", err)
			}
			if layout == Atomic && len(genDirs(opts.Dir)) != 1 {
				t.Fatalf("generations = %v, want one", genDirs(opts.Dir))
			}
		})
	}
}

// writeRaw creates an unmanaged file, bypassing the writer.
func writeRaw(t testing.TB, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTornFileRepairedAtSync(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			full := map[string]string{"a": "complete content", "d/b": "fine"}
			mustSync(t, newWriter(t, opts), full)
			// Truncate in place, as a crash after a partial write would,
			// and leave a temp file behind.
			writeRaw(t, opts.Dir, "d/..tmp-b-crash", "partial")
			if err := os.WriteFile(filepath.Join(opts.Dir, "a"), []byte("comp"), 0o600); err != nil {
				t.Fatal(err)
			}
			res := mustSync(t, newWriter(t, opts), full)
			if !res.Changed || res.Written != 1 {
				t.Fatalf("Sync over torn file: %+v, want changed, 1 written", res)
			}
			wantFiles(t, opts.Dir, full)
			if _, err := os.Lstat(filepath.Join(opts.Dir, "d", "..tmp-b-crash")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temp file left by a crash: %v, want removed", err)
			}
		})
	}
}

func TestUnmanagedReplacedWithWarning(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			var logs logBuffer
			opts.Logger = logs.logger()
			if err := os.MkdirAll(filepath.Join(opts.Dir, "dir"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeRaw(t, opts.Dir, "site.conf", "theirs")
			writeRaw(t, opts.Dir, "dir/inner", "theirs too")
			writeRaw(t, opts.Dir, "other.conf", "untouched")
			w := newWriter(t, opts)
			mustSync(t, w, map[string]string{"site.conf": "ours", "dir": "file now"})
			got, err := visible(opts.Dir)
			if err != nil {
				t.Fatal(err)
			}
			if got["site.conf"] != "ours" || got["dir"] != "file now" || got["other.conf"] != "untouched" {
				t.Fatalf("files = %s", summary(got))
			}
			log := logs.String()
			for _, want := range []string{"key=site.conf path=site.conf", "key=dir path=dir", "level=WARN"} {
				if !strings.Contains(log, want) {
					t.Fatalf("log lacks %q:\n%s", want, log)
				}
			}
			// The directory was moved aside, not deleted.
			matches, _ := filepath.Glob(filepath.Join(opts.Dir, "..displaced-dir-*", "inner"))
			if len(matches) != 1 {
				t.Fatalf("displaced directory: %v, want one holding inner", matches)
			}
			mustApply(t, w, del("site.conf"), del("dir"))
			got, _ = visible(opts.Dir)
			if _, ok := got["site.conf"]; ok || got["other.conf"] != "untouched" {
				t.Fatalf("after deletes: %s", summary(got))
			}
		})
	}
}

func TestModeDespiteUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			opts.FileMode, opts.DirMode = 0o644, 0o751
			mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "d/b": "2"})
			checkMode(t, filepath.Join(opts.Dir, "a"), 0o644)
			checkMode(t, filepath.Join(opts.Dir, "d", "b"), 0o644)
			checkMode(t, filepath.Join(opts.Dir, "d"), 0o751)

			held, err := os.Open(filepath.Join(opts.Dir, "a"))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			opts.FileMode = 0o640
			res := mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "d/b": "2"})
			if !res.Changed || res.Written != 2 {
				t.Fatalf("Sync with new mode: %+v, want changed, 2 written", res)
			}
			checkMode(t, filepath.Join(opts.Dir, "a"), 0o640)
			if layout == Atomic { // the old snapshot's inode was not chmod'ed
				if fi, err := held.Stat(); err != nil || fi.Mode().Perm() != 0o644 {
					t.Fatalf("old generation file mode = %v, %v; want 0644", fi.Mode(), err)
				}
			}
		})
	}
}

func checkMode(t *testing.T, name string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("mode of %s = %o, want %o", name, got, want)
	}
}

func TestChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			opts.UID, opts.GID = 65534, 65534
			mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "d/b": "2"})
			checkOwner(t, filepath.Join(opts.Dir, "a"), 65534, 65534)
			checkOwner(t, filepath.Join(opts.Dir, "d", "b"), 65534, 65534)

			opts.UID, opts.GID = -1, -1 // keep whatever is there
			if res := mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "d/b": "2"}); res.Changed {
				t.Fatalf("Sync without owner: %+v, want unchanged", res)
			}
			opts.UID, opts.GID = 0, 65534
			res := mustSync(t, newWriter(t, opts), map[string]string{"a": "1", "d/b": "2"})
			if !res.Changed || res.Written != 2 {
				t.Fatalf("Sync with new owner: %+v, want changed, 2 written", res)
			}
			checkOwner(t, filepath.Join(opts.Dir, "a"), 0, 65534)
		})
	}
}

func checkOwner(t *testing.T, name string, uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid {
		t.Fatalf("owner of %s = %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
	}
}

func TestRejectedKeysDoNotBlock(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			opts := testOptions(t, layout)
			var logs logBuffer
			opts.Logger = logs.logger()
			w := newWriter(t, opts)
			full := map[string]string{"good": "1", "../evil": "x", "/abs": "x", "a//b": "x", "..data": "x", "n/ok": "2"}
			res := mustSync(t, w, full)
			var keys []string
			for _, r := range res.Rejected {
				keys = append(keys, r.Key)
			}
			if got, want := strings.Join(keys, " "), "../evil ..data /abs a//b"; got != want {
				t.Fatalf("Rejected = %q, want %q", got, want)
			}
			wantFiles(t, opts.Dir, map[string]string{"good": "1", "n/ok": "2"})
			res = mustApply(t, w, put("more", "3"))
			if len(res.Rejected) != 4 {
				t.Fatalf("Rejected on next Apply = %v, want all 4 still listed", res.Rejected)
			}
			if got := strings.Count(logs.String(), "rejected: "); got != 4 {
				t.Fatalf("rejection warnings = %d, want 4 (each logged once):\n%s", got, logs.String())
			}
			wantFiles(t, opts.Dir, map[string]string{"good": "1", "n/ok": "2", "more": "3"})
		})
	}
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeRaw(t, dir, "file", "x")
	if _, err := New(Options{Dir: file, UID: -1, GID: -1}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("New on a file: %v, want not a directory", err)
	}
	if _, err := New(Options{UID: -1, GID: -1}); err == nil {
		t.Fatal("New without Dir succeeded")
	}
	if _, err := New(Options{Dir: dir, FileMode: 0o4755, UID: -1, GID: -1}); err == nil {
		t.Fatal("New with setuid mode succeeded")
	}
	missing := filepath.Join(dir, "x", "y")
	if _, err := New(Options{Dir: missing, UID: -1, GID: -1}); err != nil {
		t.Fatalf("New on a missing dir: %v", err)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Fatalf("missing target not created: %v", err)
	}
	if entries, _ := os.ReadDir(missing); len(entries) != 0 {
		t.Fatalf("New left entries behind: %v", entries)
	}
}

func TestSyncRepairsExternalDamage(t *testing.T) {
	opts := testOptions(t, Atomic)
	opts.Fsync = true
	w := newWriter(t, opts)
	full := map[string]string{"a": "1", "d/b": "2"}
	res := mustSync(t, w, full)
	if !res.Changed || res.Written != 2 {
		t.Fatalf("first Sync: %+v, want 2 written", res)
	}
	gen, _ := os.Readlink(filepath.Join(opts.Dir, "..data"))
	// Someone deletes a top-level symlink, replaces the other with a
	// file, and leaves temp files and an old generation behind.
	if err := os.Remove(filepath.Join(opts.Dir, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(opts.Dir, "d")); err != nil {
		t.Fatal(err)
	}
	writeRaw(t, opts.Dir, "d", "imposter")
	writeRaw(t, opts.Dir, "..tmp-a-123", "junk")
	writeRaw(t, opts.Dir, "..2020_01_01_00_00_00.000000000/x", "old")
	res = mustSync(t, w, full)
	if !res.Changed || res.Written != 0 {
		t.Fatalf("repair Sync: %+v, want changed without rewriting files", res)
	}
	wantFiles(t, opts.Dir, full)
	if got := genDirs(opts.Dir); len(got) != 1 || got[0] != gen {
		t.Fatalf("generations = %v, want [%s]", got, gen)
	}
	if _, err := os.Lstat(filepath.Join(opts.Dir, "..tmp-a-123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp leftover: %v, want removed", err)
	}
}

func TestApplyCopiesValues(t *testing.T) {
	opts := testOptions(t, Atomic)
	w := newWriter(t, opts)
	v := []byte("first")
	mustApply(t, w, Change{Key: "a", Value: v})
	copy(v, "XXXXX")
	if res := mustApply(t, w, put("a", "first")); res.Changed {
		t.Fatalf("Apply after the caller reused its buffer: %+v, want unchanged", res)
	}
	wantFiles(t, opts.Dir, map[string]string{"a": "first"})
}
