package writer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestMain switches to a helper mode when the test binary is re-executed as
// a child process by a test.
func TestMain(m *testing.M) {
	switch mode := os.Getenv("WRITER_TEST_HELPER"); mode {
	case "":
		os.Exit(m.Run())
	case "fsize-atomic", "fsize-plain":
		layout := Atomic
		if mode == "fsize-plain" {
			layout = Plain
		}
		exitHelper(helperFsize(os.Getenv("WRITER_TEST_DIR"), layout))
	case "fsize-visible":
		exitHelper(helperVisible(os.Getenv("WRITER_TEST_DIR")))
	case "fsize-pending":
		exitHelper(helperPending(os.Getenv("WRITER_TEST_DIR")))
	case "chown":
		exitHelper(helperChown(os.Getenv("WRITER_TEST_DIR")))
	default:
		exitHelper(fmt.Errorf("unknown helper mode %q", mode))
	}
}

func exitHelper(err error) {
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
	os.Exit(0)
}

// limitFileSize makes writes beyond n bytes fail with EFBIG in this
// process (SIGXFSZ ignored, so it is not killed); lift restores the limit.
func limitFileSize(n uint64) (lift func() error, err error) {
	signal.Ignore(syscall.SIGXFSZ)
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &saved); err != nil {
		return nil, err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: saved.Max}); err != nil {
		return nil, err
	}
	return func() error { return syscall.Setrlimit(syscall.RLIMIT_FSIZE, &saved) }, nil
}

// helperFsize runs as a child: a file size limit makes a write fail with
// EFBIG, a real failure even for root. It checks that the old files stay,
// then lifts the limit and checks that Apply(nil) catches up.
func helperFsize(dir string, layout Layout) error {
	w, err := New(Options{Dir: dir, Layout: layout, UID: -1, GID: -1, Fsync: true})
	if err != nil {
		return err
	}
	if _, err := w.Sync(map[string][]byte{"a": []byte("old-a"), "n/b": []byte("old-b")}); err != nil {
		return err
	}
	lift, err := limitFileSize(1024)
	if err != nil {
		return err
	}
	big := bytes.Repeat([]byte("n"), 4096)
	_, err = w.Apply([]Change{{Key: "a", Value: big}, {Key: "n/b", Value: []byte("new-b")}})
	if !errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("Apply with size limit: err = %v, want EFBIG", err)
	}
	if err := checkFiles(dir, map[string]string{"a": "old-a", "n/b": "old-b"}); err != nil {
		return fmt.Errorf("after failed Apply: %w", err)
	}
	if gens := genDirs(dir); layout == Atomic && len(gens) != 1 {
		return fmt.Errorf("generations after failed Apply = %v, want the old one only", gens)
	}
	if err := lift(); err != nil {
		return err
	}
	res, err := w.Apply(nil)
	if err != nil || !res.Changed {
		return fmt.Errorf("retry Apply(nil) = %+v, %v; want changed, no error", res, err)
	}
	if err := checkFiles(dir, map[string]string{"a": string(big), "n/b": "new-b"}); err != nil {
		return fmt.Errorf("after retry: %w", err)
	}
	if layout == Atomic {
		if gens := genDirs(dir); len(gens) != 1 {
			return fmt.Errorf("generations after retry = %v, want one", gens)
		}
	}
	return nil
}

// helperPending runs as a child: in the plain layout a batch that fails
// halfway has changed a file already; the next successful call must report
// Changed even though it has nothing left to write.
func helperPending(dir string) error {
	w, err := New(Options{Dir: dir, Layout: Plain, UID: -1, GID: -1})
	if err != nil {
		return err
	}
	if _, err := w.Sync(map[string][]byte{"a": []byte("old-a"), "n/b": []byte("old-b")}); err != nil {
		return err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1024, Max: 1024}); err != nil {
		return err
	}
	_, err = w.Apply([]Change{{Key: "a", Value: []byte("new-a")}, {Key: "n/b", Value: bytes.Repeat([]byte("n"), 4096)}})
	if !errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("Apply with size limit: err = %v, want EFBIG", err)
	}
	if err := checkFiles(dir, map[string]string{"a": "new-a", "n/b": "old-b"}); err != nil {
		return fmt.Errorf("after failed Apply: %w", err)
	}
	res, err := w.Apply([]Change{{Key: "n/b", Value: []byte("old-b")}})
	if err != nil || !res.Changed || res.Written != 0 {
		return fmt.Errorf("Apply reverting n/b = %+v, %v; want changed (a changed earlier), nothing written", res, err)
	}
	if res, err := w.Apply(nil); err != nil || res.Changed {
		return fmt.Errorf("Apply(nil) = %+v, %v; want unchanged", res, err)
	}
	return nil
}

// helperChown runs as an unprivileged child and expects New to refuse a
// chown to root.
func helperChown(dir string) error {
	_, err := New(Options{Dir: dir, UID: 0, GID: 0})
	if !errors.Is(err, ErrChownNotPermitted) {
		return fmt.Errorf("New as uid %d with UID 0: err = %v, want ErrChownNotPermitted", os.Geteuid(), err)
	}
	if _, err := New(Options{Dir: dir, UID: -1, GID: -1}); err != nil {
		return fmt.Errorf("New without owner: %v", err)
	}
	return nil
}

// checkFiles compares the visible files under dir with want.
func checkFiles(dir string, want map[string]string) error {
	got, err := visible(dir)
	if err != nil {
		return err
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("files = %s, want %s", summary(got), summary(want))
	}
	return nil
}

func summary(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if len(v) > 20 {
			v = v[:20] + "…"
		}
		fmt.Fprintf(&b, "%q:%q ", k, v)
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}

// visible returns the files a reader sees under dir, following symlinks,
// skipping reserved ".." names at the top.
func visible(dir string) (map[string]string, error) {
	files := make(map[string]string)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		real, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(real, p)
			b, err := os.ReadFile(p)
			files[filepath.ToSlash(filepath.Join(e.Name(), rel))] = string(b)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func genDirs(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var gens []string
	for _, e := range entries {
		if isGenName(e.Name()) {
			gens = append(gens, e.Name())
		}
	}
	return gens
}

// testOptions returns options for a fresh target under t.TempDir().
func testOptions(t testing.TB, layout Layout) Options {
	t.Helper()
	return Options{Dir: filepath.Join(t.TempDir(), "target"), Layout: layout, UID: -1, GID: -1}
}

func newWriter(t testing.TB, opts Options) *Writer {
	t.Helper()
	w, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return w
}

func mustSync(t testing.TB, w *Writer, full map[string]string) Result {
	t.Helper()
	res, err := w.Sync(bytesMap(full))
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return res
}

func mustApply(t testing.TB, w *Writer, changes ...Change) Result {
	t.Helper()
	res, err := w.Apply(changes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func put(k, v string) Change { return Change{Key: k, Value: []byte(v)} }
func del(k string) Change    { return Change{Key: k, Delete: true} }

func bytesMap(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

func wantFiles(t testing.TB, dir string, want map[string]string) {
	t.Helper()
	if err := checkFiles(dir, want); err != nil {
		t.Fatal(err)
	}
}

// logBuffer is a concurrency-safe log sink for asserting warnings.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var layouts = []Layout{Atomic, Plain}
