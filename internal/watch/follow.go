package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// stableWatch is how long a watch must have lived, when it delivered
// nothing, to count as healthy and reset the retry backoff. A watch that
// etcd created and then answered "compacted" counts as healthy at once:
// etcd is serving, and the resync it needs is no retry of something that
// failed. (Without this, a series of outages with compaction, each
// soon after the last, doubled the delay before each resync; the bench's
// outage rows showed it as the time from "watch ended" to "resync read".)
const stableWatch = 10 * time.Second

// maxMissedProgress is how many consecutive progress requests may go
// unanswered before the watch is abandoned.
const maxMissedProgress = 2

// followResult says why follow stopped.
type followResult struct {
	cause   string // Batch.Cause of the resync; "" if ctx is done
	err     error  // the watch's error, if it failed with one
	healthy bool   // the watch worked, so the backoff may reset (see stableWatch)
}

// follower is the state of one watch, from creation until it is abandoned.
type follower struct {
	w       *Watcher
	out     chan<- Batch
	snapRev int64 // revision of the snapshot the watch continues
	lastRev int64 // revision of the last batch sent

	start     time.Time
	created   bool
	responses int       // responses after creation
	heard     time.Time // when etcd last answered: a response, or a probe's creation
	err       error     // the error the watch failed with, if any

	// Liveness rounds, one per ProgressInterval tick (see liveness.go).
	asked        time.Time // when the current round began; zero before the first
	sentProgress bool      // a progress request was sent this round
	sentProbe    bool      // a probe watch was created this round
	progressAt   time.Time // when the last progress notification arrived
	probeAt      time.Time // when the last probe watch was confirmed
	progressLate bool      // the last round's progress request went unanswered
	missed       int       // consecutive rounds in which etcd answered nothing
	unanswered   int       // consecutive rounds with a probe answered and progress not

	probeCh     clientv3.WatchChan // the current probe watch; nil if none
	probeCancel context.CancelFunc
}

// follow watches the prefix for the revisions after rev and sends one batch
// per revision until the watch loses continuity or ctx is done. The watch's context is
// always cancelled on return, which releases its gRPC stream.
func (w *Watcher) follow(ctx context.Context, rev int64, out chan<- Batch) followResult {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	defer w.update(func(s *Status) { s.Connected = false })

	f := &follower{w: w, out: out, snapRev: rev, lastRev: rev, start: time.Now()}
	// The watch starts at the snapshot's own revision, not the one after:
	// etcd ignores progress requests while a watcher's start revision is
	// ahead of the store (mvcc watchableStore.progressIfSync), so a watch
	// from rev+1 on an idle cluster would never answer one. The events of
	// rev itself are already in the snapshot and batches drops them.
	wch := w.client.Watch(wctx, w.start, clientv3.WithRange(w.end), clientv3.WithRev(rev),
		clientv3.WithCreatedNotify(), clientv3.WithProgressNotify())
	defer f.stopProbe()
	var tick <-chan time.Time
	if w.progress > 0 {
		t := time.NewTicker(w.progress)
		defer t.Stop()
		tick = t.C
	}
	for {
		var cause string
		select {
		case <-ctx.Done():
			return followResult{}
		case resp, ok := <-wch:
			cause = f.handle(ctx, resp, ok)
		case resp, ok := <-f.probeCh:
			f.probed(resp, ok)
		case <-tick:
			cause = f.checkLiveness(wctx)
		}
		if ctx.Err() != nil {
			return followResult{}
		}
		if cause != "" {
			healthy := f.created && (f.responses > 0 || time.Since(f.start) >= stableWatch ||
				CauseKind(cause) == CauseCompacted)
			return followResult{cause: cause, err: f.err, healthy: healthy}
		}
	}
}

// handle processes one watch response and returns a resync cause if the
// watch lost continuity, or "".
func (f *follower) handle(ctx context.Context, resp clientv3.WatchResponse, ok bool) string {
	if !ok {
		return CauseWatchClosed
	}
	f.heard = time.Now()
	f.w.update(func(s *Status) { s.LastHeard = f.heard })
	if err := resp.Err(); err != nil {
		return f.failure(resp, err)
	}
	if resp.Created {
		f.created = true
		f.w.update(func(s *Status) { s.Connected = true })
		return ""
	}
	f.responses++
	if resp.IsProgressNotify() {
		f.progressAt = f.heard
		f.w.update(func(s *Status) { s.ProgressNotifies++ })
		return ""
	}
	bs := f.batches(resp.Events)
	// etcd sends a catch-up in chunks of serverChunkRevs revisions, so a
	// full chunk is very likely followed by another one. The chunk counts
	// the revisions batches dropped (the snapshot's own, right after a
	// resync), so count them too.
	fullChunk := revisions(resp.Events) >= serverChunkRevs
	for i, b := range bs {
		b.More = i < len(bs)-1 || fullChunk
		if !f.w.send(ctx, f.out, b) {
			return ""
		}
		f.lastRev = b.Rev
		// Time spent waiting for the consumer is not etcd's silence:
		// the round starts over.
		f.asked, f.missed = time.Time{}, 0
	}
	return ""
}

// failure turns a watch error into a resync cause, and records it.
func (f *follower) failure(resp clientv3.WatchResponse, err error) string {
	f.err = err
	f.w.update(func(s *Status) { s.LastError = err.Error() })
	switch {
	case resp.CompactRevision != 0:
		return fmt.Sprintf("%s: etcd compacted up to revision %d, the watch was at %d",
			CauseCompacted, resp.CompactRevision, f.lastRev)
	case errors.Is(err, rpctypes.ErrNoLeader):
		return CauseNoLeader + ": " + err.Error()
	}
	return CauseWatchError + ": " + err.Error()
}

// serverChunkRevs is how many revisions etcd puts at most into one watch
// response to a watcher that is catching up (watchBatchMaxRevs in
// go.etcd.io/etcd/server/v3/storage/mvcc, unchanged since etcd 3.0).
const serverChunkRevs = 1000

// revisions counts the distinct revisions of events, which are in revision
// order.
func revisions(events []*clientv3.Event) int {
	n := 0
	for i, ev := range events {
		if i == 0 || ev.Kv.ModRevision != events[i-1].Kv.ModRevision {
			n++
		}
	}
	return n
}

// batches groups events into one batch per revision, in order. A watch
// response never splits a revision (etcd only does that with WithFragment,
// which is not used). Events already covered by the snapshot or older than
// the last batch are dropped, so the consumer never goes back in time, and
// so are keys outside the prefixes: a revision with only those makes none.
func (f *follower) batches(events []*clientv3.Event) []Batch {
	var bs []Batch
	for _, ev := range events {
		rev := ev.Kv.ModRevision
		p, ok := f.w.match(string(ev.Kv.Key))
		if !ok || rev <= f.snapRev || rev < f.lastRev {
			continue // outside the prefixes, or already sent
		}
		if len(bs) == 0 || bs[len(bs)-1].Rev != rev {
			bs = append(bs, Batch{Rev: rev})
		}
		c := Change{Key: strings.TrimPrefix(string(ev.Kv.Key), p), Prefix: p}
		if ev.Type == clientv3.EventTypeDelete {
			c.Delete = true
		} else {
			c.Value = ev.Kv.Value
		}
		b := &bs[len(bs)-1]
		b.Changes = append(b.Changes, c)
	}
	return bs
}
