package watch

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing delays with full jitter: the n-th
// delay after a reset is uniform in [0, min(max, min·2ⁿ)]. Full jitter keeps
// many dispensers that lost the same etcd from retrying in lockstep.
type backoff struct {
	min, max time.Duration
	ceil     time.Duration // upper bound of the next delay
}

func newBackoff(minDelay, maxDelay time.Duration) *backoff {
	return &backoff{min: minDelay, max: maxDelay, ceil: minDelay}
}

// next returns the delay before the next attempt and doubles the bound.
func (b *backoff) next() time.Duration {
	d := rand.N(b.ceil + 1)
	b.ceil = min(b.ceil*2, b.max)
	return d
}

// reset starts over from the minimum delay, after a success.
func (b *backoff) reset() { b.ceil = b.min }
