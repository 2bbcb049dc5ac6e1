package watch

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	const minD, maxD = 100 * time.Millisecond, 1 * time.Second
	b := newBackoff(minD, maxD)
	for _, ceil := range []time.Duration{minD, 2 * minD, 4 * minD, 8 * minD, maxD, maxD} {
		if d := b.next(); d < 0 || d > ceil {
			t.Fatalf("next() = %v, want within [0, %v]", d, ceil)
		}
	}
	b.reset()
	if d := b.next(); d > minD {
		t.Fatalf("next() after reset = %v, want <= %v", d, minD)
	}
	// Full jitter: 200 draws from [0, 1s] are not all equal.
	b = newBackoff(maxD, maxD)
	first, same := b.next(), true
	for range 200 {
		same = same && b.next() == first
	}
	if same {
		t.Fatalf("200 delays all equal %v, want jitter", first)
	}
}
