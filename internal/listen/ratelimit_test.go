package listen

import (
	"testing"
	"time"
)

func TestLimiterBucket(t *testing.T) {
	l := newLimiter(Rate{Count: 2, Per: time.Second}, 10)
	t0 := time.Unix(1000, 0)
	for i, tc := range []struct {
		at   time.Duration
		key  string
		want bool
	}{
		{0, "a", true},
		{0, "a", true},
		{0, "a", false}, // burst of 2 used up
		{0, "b", true},  // b has its own bucket
		{400 * time.Millisecond, "a", false},
		{500 * time.Millisecond, "a", true}, // 2 per second: one token per 500ms
		{500 * time.Millisecond, "a", false},
	} {
		if got := l.allow(tc.key, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%d: allow(%s, +%v) = %v, want %v", i, tc.key, tc.at, got, tc.want)
		}
	}
}

func TestLimiterEvicts(t *testing.T) {
	l := newLimiter(Rate{Count: 1, Per: time.Minute}, 2)
	t0 := time.Unix(1000, 0)
	l.allow("a", t0)
	l.allow("b", t0.Add(time.Second))
	// Full: c evicts the least recently seen key, a, and nothing else.
	l.allow("c", t0.Add(2*time.Second))
	if _, ok := l.clients["a"]; ok || len(l.clients) != 2 {
		t.Fatalf("after c: clients %v, want b and c", keys(l))
	}
	// b is still limited: its bucket was kept.
	if l.allow("b", t0.Add(3*time.Second)) {
		t.Error("b got a second request within a minute after c arrived")
	}
	// A minute on, every bucket is full again: d makes room by forgetting
	// all of them, which loses nothing.
	if !l.allow("d", t0.Add(2*time.Minute)) {
		t.Error("d limited on its first request")
	}
	if len(l.clients) != 1 {
		t.Errorf("after d: clients %v, want only d", keys(l))
	}
	for i := range 100 {
		l.allow(string(rune('A'+i)), t0.Add(2*time.Minute))
		if len(l.clients) > 2 {
			t.Fatalf("%d clients kept, max 2", len(l.clients))
		}
	}
}

func keys(l *limiter) []string {
	var out []string
	for k := range l.clients {
		out = append(out, k)
	}
	return out
}
