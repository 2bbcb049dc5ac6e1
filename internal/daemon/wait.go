package daemon

import "time"

// quiescence implements --wait=MIN:MAX: after a batch, write once no batch
// has come for MIN, but no later than MAX after the first batch of the
// burst. Its channels are nil while no burst is pending, so a select on
// them blocks; it belongs to the daemon's loop goroutine.
type quiescence struct {
	min, max time.Duration
	quiet    <-chan time.Time // fires MIN after the latest batch
	maxed    <-chan time.Time // fires MAX after the burst's first batch
}

// batch notes that a batch arrived.
func (q *quiescence) batch() {
	q.quiet = time.After(q.min)
	if q.maxed == nil {
		q.maxed = time.After(q.max)
	}
}

// done ends the burst, once its timer fired.
func (q *quiescence) done() { q.quiet, q.maxed = nil, nil }
