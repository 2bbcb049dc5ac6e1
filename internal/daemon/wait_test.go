package daemon

import (
	"testing"
	"testing/synctest"
	"time"
)

// fires reports which of q's timers fires first, and when, in fake time.
func fires(q *quiescence) (string, time.Duration) {
	start := time.Now()
	select {
	case <-q.quiet:
		return "quiet", time.Since(start)
	case <-q.maxed:
		return "max", time.Since(start)
	}
}

func TestQuiescence(t *testing.T) {
	t.Run("quiet after MIN", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			q := quiescence{min: 2 * time.Second, max: 8 * time.Second}
			q.batch()
			time.Sleep(time.Second) // fake time: a second batch 1s later
			q.batch()
			if which, after := fires(&q); which != "quiet" || after != 2*time.Second {
				t.Fatalf("%s fired after %v more; want quiet 2s after the last batch", which, after)
			}
		})
	})
	t.Run("MAX caps a steady stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			q := quiescence{min: 2 * time.Second, max: 5 * time.Second}
			start := time.Now()
			for range 10 { // a batch every second never lets MIN pass
				q.batch()
				select {
				case <-q.maxed:
					if got := time.Since(start); got != 5*time.Second {
						t.Fatalf("max fired after %v, want 5s", got)
					}
					return
				case <-q.quiet:
					t.Fatalf("quiet fired although batches came every second")
				case <-time.After(time.Second):
				}
			}
			t.Fatalf("max never fired during 10s of batches")
		})
	})
	t.Run("done clears", func(t *testing.T) {
		q := quiescence{min: time.Second, max: time.Second}
		q.batch()
		q.done()
		if q.quiet != nil || q.maxed != nil {
			t.Fatalf("timers left after done: %v %v", q.quiet, q.maxed)
		}
	})
}
