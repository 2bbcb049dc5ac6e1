package fault_test

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// line is one line of output and when it arrived.
type line struct {
	at   time.Time
	text string
}

// lines is an io.Writer that keeps every complete line with its arrival
// time, so a test can wait for the next line that matches, with a deadline,
// and know exactly which lines came in between.
type lines struct {
	mu      sync.Mutex
	partial string
	all     []line
	grew    chan struct{} // closed and replaced when a line arrives
	read    int           // lines before this index were consumed by await
}

func newLines() *lines { return &lines{grew: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.partial + string(p)
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, line{at: now, text: s[:i]})
		s = s[i+1:]
	}
	l.partial = s
	close(l.grew)
	l.grew = make(chan struct{})
	return len(p), nil
}

// String is everything written so far, for failure messages.
func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ln := range l.all {
		b.WriteString(ln.text + "\n")
	}
	return b.String() + l.partial
}

// unread returns the lines not consumed yet, without consuming them.
func (l *lines) unread() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ln := range l.all[l.read:] {
		out = append(out, ln.text)
	}
	return out
}

// skip marks every line so far as consumed.
func (l *lines) skip() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.read = len(l.all)
}

// await consumes lines up to and including the next one for which ok is
// true and returns it with the lines consumed before it. It fails the test
// after waitLong.
func (l *lines) await(t testing.TB, what string, ok func(string) bool) (line, []string) {
	t.Helper()
	deadline := time.After(waitLong)
	var skipped []string
	for {
		l.mu.Lock()
		for l.read < len(l.all) {
			ln := l.all[l.read]
			l.read++
			if ok(ln.text) {
				l.mu.Unlock()
				return ln, skipped
			}
			skipped = append(skipped, ln.text)
		}
		grew := l.grew
		l.mu.Unlock()
		select {
		case <-grew:
		case <-deadline:
			t.Fatalf("no line %s after %v; skipped %q", what, waitLong, skipped)
		}
	}
}

// next awaits the next line starting with prefix.
func (l *lines) next(t testing.TB, prefix string) (line, []string) {
	t.Helper()
	return l.await(t, "starting with "+prefix, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// containing awaits the next line containing sub.
func (l *lines) containing(t testing.TB, sub string) line {
	t.Helper()
	ln, _ := l.await(t, "containing "+sub, func(s string) bool { return strings.Contains(s, sub) })
	return ln
}
