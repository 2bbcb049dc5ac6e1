package source

import (
	"context"
	"slices"
	"sync"
)

// fifo is a lock that is handed to waiters in the order they asked for it
// (sync.Mutex makes no such promise). It serialises the runs of one source
// (spec §4.2 "multiple runs will queue").
type fifo struct {
	mu      sync.Mutex
	busy    bool
	waiters []chan struct{}
}

// lock waits for the lock until ctx is done or stop is closed; it returns
// nil once the caller holds it, else the reason it gave up (the caller then
// does not hold it).
func (q *fifo) lock(ctx context.Context, stop <-chan struct{}) error {
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		q.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	q.waiters = append(q.waiters, ch)
	q.mu.Unlock()
	var err error
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-stop:
		err = ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := slices.Index(q.waiters, ch); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
		return err
	}
	// unlock handed the lock to us as we gave up: pass it on.
	q.handOff()
	return err
}

// unlock gives the lock to the longest waiter, or frees it.
func (q *fifo) unlock() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.handOff()
}

// handOff needs q.mu held.
func (q *fifo) handOff() {
	if len(q.waiters) == 0 {
		q.busy = false
		return
	}
	ch := q.waiters[0]
	q.waiters = q.waiters[1:]
	close(ch)
}
