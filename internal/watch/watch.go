// Package watch mirrors the keys under one etcd prefix (or a few, see
// Options.Also) as a stream of batches: first one consistent snapshot of the
// whole prefix, then one batch per etcd revision that touched the prefix, in
// revision order.
//
// It is the only user of the clientv3 KV watch API in dispenser. The stream
// has no gaps and no duplicates: the snapshot is read at a single revision
// (paged, linearizable) and the watch continues from the revision after
// it. When continuity is lost (the resume revision was compacted, the watch
// failed or was cancelled, the member lost its leader, or etcd stopped
// answering liveness requests, see Options.ProgressInterval) the Watcher
// reads a fresh snapshot and sends it as a Reset batch, which the consumer
// must treat as the complete new state.
//
// It deliberately does not write files, coalesce bursts, decide key→path
// mappings, or create or configure the etcd client: the caller passes a
// ready *clientv3.Client and owns it. It never gives up on etcd errors; it
// logs them and retries with backoff until its context is done.
package watch

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Change is one key's new state within a Batch.
type Change struct {
	// Key is the etcd key with its prefix (Prefix) removed.
	Key string
	// Prefix is the prefix the key is under: Options.Prefix or one of
	// Options.Also.
	Prefix string
	// Value is the key's value, nil for a delete (and possibly for an empty
	// value).
	Value []byte
	// Delete is true if the key was deleted at this revision.
	Delete bool
}

// Batch is what the consumer applies atomically: either a complete snapshot
// (Reset) or all changes of one etcd revision.
type Batch struct {
	// Rev is the etcd revision this batch brings the consumer to.
	Rev int64
	// Reset, when true, means Changes is the complete current content of the
	// prefix (no deletes, sorted by key): the consumer replaces its whole
	// state and removes anything not listed.
	Reset bool
	// Changes are sorted by key for Reset batches and in the order etcd
	// reports the transaction's events otherwise. A key appears at
	// most once in a Reset batch; in a revision batch a key appears once,
	// because etcd forbids touching a key twice in one transaction.
	Changes []Change
	// Cause says why a Reset batch was sent, for logs and metrics: "initial",
	// or a kind optionally followed by ": detail", e.g. "compacted: ...",
	// "watch-error: ...", "watch-closed", "no-leader: ...",
	// "progress-timeout: ...". CauseKind extracts the kind. Empty for
	// revision batches.
	Cause string
	// More is true when another batch is known or very likely to follow at
	// once: etcd delivered this batch together with the next one in one
	// watch response (a catch-up after a reconnect brings many revisions
	// at once), or this batch ends a response that filled etcd's catch-up
	// chunk (1000 revisions), after which etcd sends the next chunk within
	// about 100 ms. A consumer that wants one write (and one reload) per
	// catch-up keeps receiving while More is set, with a short timeout for
	// the second case.
	More bool
	// Page is the index of this batch within a paged snapshot
	// (Options.PagedResets): 0 for the first page. Every page of one
	// snapshot has Reset=true, the same Rev and Cause, and its Changes
	// sorted by key and after the previous page's. A batch with Reset=true
	// and Page=0 starts a snapshot; if a snapshot read fails midway and is
	// retried, the consumer sees Page=0 again and must discard the pages it
	// had. Always 0 without PagedResets.
	Page int
	// Partial is true on every page of a paged snapshot except the last:
	// the state is not complete until a Reset batch with Partial=false
	// arrives (only then may the consumer delete keys it did not see,
	// swap, or signal). Always false without PagedResets.
	Partial bool
}

// Resync cause kinds; Batch.Cause starts with one of these.
const (
	CauseInitial         = "initial"
	CauseCompacted       = "compacted"
	CauseWatchError      = "watch-error"
	CauseWatchClosed     = "watch-closed"
	CauseNoLeader        = "no-leader"
	CauseProgressTimeout = "progress-timeout"
)

// CauseKind returns the kind of a Batch.Cause: the part before the first
// ": ", e.g. "compacted" for "compacted: revision 12 is gone". Use it as a
// bounded metrics label.
func CauseKind(cause string) string {
	kind, _, _ := strings.Cut(cause, ": ")
	return kind
}

// Options configure a Watcher. Only Client is required.
type Options struct {
	// Client is the etcd client; required. The Watcher never closes it.
	Client *clientv3.Client
	// Prefix is the etcd key prefix, used verbatim (the caller normalises a
	// trailing "/"). Empty means all keys.
	Prefix string
	// Also are further prefixes followed in the same stream as Prefix: the
	// snapshot covers all of them at one revision, and a transaction that
	// touches several of them is one batch. The Watcher reads and watches
	// the whole key range from the smallest prefix to the end of the
	// largest and drops the keys outside the prefixes (a revision that
	// touches only those yields no batch), so keep the prefixes close
	// (e.g. /app/files/ and /app/patterns/): every key between them is
	// read and watched too. No prefix may be a prefix of another, and none
	// may be empty.
	Also []string
	// PageSize is the number of keys per Get request of a snapshot; zero
	// means 1000.
	PageSize int64
	// PagedResets, when true, sends each snapshot as one batch per page
	// read from etcd (PageSize keys) instead of one batch holding the
	// whole prefix, and reads the next page while the consumer handles the
	// previous one: the Watcher holds at most the page being sent and the
	// one being read. See Batch.Page and Batch.Partial. Off by default:
	// every snapshot is one Reset batch.
	PagedResets bool
	// MinBackoff and MaxBackoff bound the delay between retries after etcd
	// errors (exponential, with full jitter); zero means 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds each Get of a snapshot, so that a stuck member
	// or an unreachable cluster cannot stall a resync forever (the client
	// waits for a connection rather than failing fast); zero means 10s.
	RequestTimeout time.Duration
	// ProgressInterval, if non-zero, makes the Watcher ask for a sign of
	// life on the watch's stream every interval and expect it (or any
	// other watch response) within the next interval. When two requests in
	// a row go unanswered (2–3 intervals of silence) it abandons the watch
	// and resyncs with cause "progress-timeout". This detects a member or
	// connection that stopped delivering without an error. The sign is a
	// progress notification (LivenessProgress), or, through etcd's gRPC
	// proxy, which does not answer progress requests, the confirmation of
	// a probe watch (LivenessProbe); the Watcher finds out which within
	// about four intervals and logs it once. Neither reads the prefix.
	// Zero disables it.
	ProgressInterval time.Duration
	// Logger receives warnings about etcd errors and resyncs; nil discards.
	Logger *slog.Logger
}

// Status is a snapshot of a Watcher's health, for health checks and metrics.
type Status struct {
	// Rev is the revision of the last batch sent to the consumer; 0 before
	// the first.
	Rev int64
	// Connected is true while a watch is established (etcd confirmed its
	// creation and it has not failed since). It cannot see transparent
	// reconnects inside the client; use ProgressInterval and LastHeard to
	// detect a silent connection.
	Connected bool
	// LastBatch is when the last batch was sent; zero before the first.
	LastBatch time.Time
	// LastHeard is when etcd last answered: a snapshot, an event, a progress
	// notification, the watch's creation or a probe watch's confirmation.
	LastHeard time.Time
	// ProgressNotifies counts the progress notifications received.
	ProgressNotifies int64
	// Probes counts the probe watches etcd confirmed (LivenessProbe).
	Probes int64
	// Liveness is the liveness signal in use, LivenessProgress or
	// LivenessProbe, once known; "" before, or without ProgressInterval.
	Liveness string
	// Resyncs counts the Reset batches sent, by CauseKind, including the
	// initial one. It is a copy; the caller may modify it.
	Resyncs map[string]int64
	// LastError is the last etcd error seen, or "" if there has been none.
	LastError string
}

// Watcher follows one prefix. Create it with New and start it with Run.
type Watcher struct {
	client   *clientv3.Client
	prefix   string   // for logs: the prefixes joined by ","
	prefixes []string // Prefix, then Also
	start    string   // the key range read and watched: [start, end)
	end      string
	pageSize int64
	paged    bool
	minBO    time.Duration
	maxBO    time.Duration
	reqTO    time.Duration
	progress time.Duration
	log      *slog.Logger

	// Liveness state, used by Run's goroutine only.
	liveness string // the settled Liveness* signal; "" while unknown
	probeKey string // probe watches watch probeKey + a sequence number
	probes   uint64

	mu     sync.Mutex
	status Status
}

// New returns a Watcher for opts, with zero values replaced by defaults.
func New(opts Options) *Watcher {
	w := &Watcher{
		client:   opts.Client,
		prefix:   strings.Join(append([]string{opts.Prefix}, opts.Also...), ","),
		prefixes: append([]string{opts.Prefix}, opts.Also...),
		pageSize: opts.PageSize,
		paged:    opts.PagedResets,
		minBO:    opts.MinBackoff,
		maxBO:    opts.MaxBackoff,
		reqTO:    opts.RequestTimeout,
		progress: opts.ProgressInterval,
		log:      opts.Logger,
		status:   Status{Resyncs: map[string]int64{}},
	}
	if w.pageSize <= 0 {
		w.pageSize = 1000
	}
	if w.minBO <= 0 {
		w.minBO = 100 * time.Millisecond
	}
	if w.maxBO <= 0 {
		w.maxBO = 30 * time.Second
	}
	if w.maxBO < w.minBO {
		w.maxBO = w.minBO
	}
	if w.reqTO <= 0 {
		w.reqTO = 10 * time.Second
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.log = w.log.With("component", "watch", "prefix", w.prefix)
	w.start, w.end = keyRange(w.prefixes)
	w.probeKey = newProbeKey(w.start)
	return w
}

// keyRange returns the smallest key range [start, end) that covers every
// prefix. An end of "\x00" means up to the last key.
func keyRange(prefixes []string) (start, end string) {
	for i, p := range prefixes {
		k, e := p, clientv3.GetPrefixRangeEnd(p)
		if k == "" {
			k = "\x00" // the smallest key; etcd rejects an empty one
		}
		if i == 0 || k < start {
			start = k
		}
		if i == 0 || end != "\x00" && (e == "\x00" || e > end) {
			end = e
		}
	}
	return start, end
}

// match returns the prefix key is under, if any.
func (w *Watcher) match(key string) (string, bool) {
	for _, p := range w.prefixes {
		if strings.HasPrefix(key, p) {
			return p, true
		}
	}
	return "", false
}

// Run sends batches on out until ctx is done, then returns ctx.Err(). It
// never returns because of etcd errors: it logs each one and retries with
// backoff. The first batch is a Reset with cause "initial".
//
// Run does not close out. Every send on out also waits on ctx, so a consumer
// that stops reading must cancel ctx. Call Run at most once at a time.
//
// Steps, repeated until ctx is done:
//  1. Read a snapshot of the prefix at one revision and send it as a Reset
//     batch (with PagedResets, one Reset batch per page, as each page is
//     read); on error log, back off and retry from the first page.
//  2. Watch the revisions after the snapshot and send one batch per
//     revision, until the watch loses continuity.
//  3. Back off (the delay resets once a watch has proved healthy) and go to 1.
func (w *Watcher) Run(ctx context.Context, out chan<- Batch) error {
	bo := newBackoff(w.minBO, w.maxBO)
	cause := CauseInitial
	for {
		rev, err := w.resync(ctx, out, cause) // (1)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if !w.retryGet(ctx, bo, err) {
				return ctx.Err()
			}
			continue
		}
		res := w.follow(ctx, rev, out) // (2)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if res.healthy {
			bo.reset()
		}
		cause = res.cause
		d := bo.next() // (3)
		w.logResync(res, d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// logResync warns that the watch ended and a resync follows after d.
func (w *Watcher) logResync(res followResult, d time.Duration) {
	attrs := []any{"cause", res.cause, "rev", w.Status().Rev}
	if hint := errorHint(res.err); hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	w.log.Warn("etcd watch of "+w.prefix+" lost continuity; resyncing in "+d.Round(time.Millisecond).String(), attrs...)
}

// Status returns the current status. It is safe for concurrent use.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Resyncs = make(map[string]int64, len(w.status.Resyncs))
	for k, v := range w.status.Resyncs {
		s.Resyncs[k] = v
	}
	return s
}

// update changes the status under the lock.
func (w *Watcher) update(f func(s *Status)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.status)
}

// send delivers b unless ctx is done first, and records it in the status.
func (w *Watcher) send(ctx context.Context, out chan<- Batch, b Batch) bool {
	select {
	case out <- b:
	case <-ctx.Done():
		return false
	}
	w.update(func(s *Status) {
		s.LastBatch = time.Now()
		if b.Partial {
			return // the consumer is not at b.Rev until the last page
		}
		s.Rev = b.Rev
		if b.Reset {
			s.Resyncs[CauseKind(b.Cause)]++
		}
	})
	return true
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
