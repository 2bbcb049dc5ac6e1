package daemon

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/leaktest"
)

// waitLong bounds every wait in these tests; a passing test never waits it
// out, and CI is a slow, shared 2-core machine.
const waitLong = 60 * time.Second

const childSentinel = "daemon-test-child"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childSentinel {
		os.Exit(childMain(os.Args[2]))
	}
	os.Exit(leaktest.Main(m))
}

// childMain is the child of these tests (the test binary re-executed): it
// prints "ready <files>" with the contents of the files in dir, then
// "<SIG> <files>" per SIGHUP, and exits 0 on SIGTERM or SIGINT.
func childMain(dir string) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("ready %s\n", contents(dir))
	for s := range sigs {
		if s != syscall.SIGHUP {
			return 0
		}
		fmt.Printf("HUP %s\n", contents(dir))
	}
	return 0
}

func childArgv(dir string) []string { return []string{os.Args[0], childSentinel, dir} }

// contents lists "path=value" for every file under dir, following symlinks
// and skipping the writer's "..*" entries, sorted and joined by ",".
func contents(dir string) string {
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		if strings.HasPrefix(e.Name(), "..") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel+"="+string(b))
		}
		return nil
	})
	slices.Sort(out)
	return strings.Join(out, ",")
}

// lines is an io.Writer that hands each complete line to a channel, so a
// test can wait for output with a deadline.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	all []string
	ch  chan string
}

func newLines() *lines { return &lines{ch: make(chan string, 1024)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		line = strings.TrimSuffix(line, "\n")
		l.all = append(l.all, line)
		select {
		case l.ch <- line:
		default:
		}
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// next returns the next line that starts with prefix, failing the test
// after waitLong.
func (l *lines) next(t testing.TB, prefix string) string {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case line := <-l.ch:
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-deadline:
			t.Fatalf("no line starting with %q after %v", prefix, waitLong)
		}
	}
}
