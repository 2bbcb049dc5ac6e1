package pull

import (
	"context"
	"fmt"

	"github.com/dispenser-dev/dispenser/internal/watch"
)

// Event is one change of a watched etcd key.
type Event struct {
	// Rev is the etcd revision of the change, or of the read that found the
	// value.
	Rev int64
	// Value is the key's value, the JWT text; "" if Deleted or Err is set.
	Value string
	// Deleted is true if the key does not exist: it was deleted at Rev, or
	// a read found it absent. The caller keeps its current pattern: removing
	// a pattern's work takes a new signed pattern.
	Deleted bool
	// Err is set if the value cannot be taken: it is larger than
	// Options.MaxSize.
	Err error
	// Cause is "" for a change the watch saw at its revision. For a value
	// found by reading the key it is internal/watch's Batch.Cause: "initial"
	// for the read at the start, else why the watch lost continuity and read
	// again (e.g. "compacted: …").
	Cause string
}

// Watch reads the etcd key of p, then follows it until ctx is done and
// returns ctx.Err(). It calls on from its own goroutine, one call at a time
// and in revision order:
//
//   - once for the first read (Cause "initial"), whether or not the key
//     exists, so that a value written before Watch started is not missed;
//   - for every put of the key (even of an unchanged value) and every delete,
//     within the watch event that brings it, with Cause "";
//   - after the watch lost continuity (reconnect after compaction, no
//     leader, watch error), for the value read again, only if it differs
//     from the last one reported (in value or existence).
//
// on should return quickly (e.g. enqueue a pull): while it runs, the watch
// waits. Watch never gives up on etcd errors: internal/watch logs them to
// Options.Logger and retries with backoff. It returns an error at once if p
// is not an etcd path or Options.Etcd is nil.
//
// Each Watch is one etcd watch on the key, used as a prefix, whose events
// for other keys with the same start (/p/app2 for /p/app) are dropped.
func (f *Fetcher) Watch(ctx context.Context, p Path, on func(Event)) error {
	if p.Kind != Etcd {
		return fmt.Errorf("watch %s: only etcd:/// paths can be watched", p)
	}
	if f.opts.Etcd == nil {
		return fmt.Errorf("watch %s: etcd is not configured; set ETCD_ENDPOINTS (and the other ETCD_* variables) to pull from etcd", p)
	}
	w := watch.New(watch.Options{
		Client:           f.opts.Etcd,
		Prefix:           p.Key,
		MinBackoff:       f.opts.MinBackoff,
		MaxBackoff:       f.opts.MaxBackoff,
		RequestTimeout:   f.opts.EtcdTimeout,
		ProgressInterval: f.opts.ProgressInterval,
		Logger:           f.opts.Logger,
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan watch.Batch)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, batches) }()
	k := &keyState{f: f, key: p.Key}
	for {
		select {
		case b := <-batches:
			for _, ev := range k.events(b) {
				on(ev)
			}
		case err := <-done:
			return err
		}
	}
}

// keyState is the last state of the key reported by Watch.
type keyState struct {
	f        *Fetcher
	key      string
	reported bool   // an event was reported
	exists   bool   // the key existed at the last event
	value    string // its value then
}

// events turns a batch of the prefix into the events of the exact key.
// Changes of other keys under the prefix have a non-empty Key.
func (k *keyState) events(b watch.Batch) []Event {
	var evs []Event
	if b.Reset {
		ev := Event{Rev: b.Rev, Deleted: true, Cause: b.Cause}
		for _, c := range b.Changes {
			if c.Key == "" {
				ev.Deleted, ev.Value = false, string(c.Value)
			}
		}
		if k.reported && k.exists == !ev.Deleted && k.value == ev.Value {
			return nil
		}
		evs = append(evs, ev)
	} else {
		for _, c := range b.Changes {
			if c.Key == "" {
				evs = append(evs, Event{Rev: b.Rev, Deleted: c.Delete, Value: string(c.Value)})
			}
		}
	}
	for i := range evs {
		k.reported, k.exists, k.value = true, !evs[i].Deleted, evs[i].Value
		if int64(len(evs[i].Value)) > k.f.opts.MaxSize {
			evs[i].Value, evs[i].Err = "", k.f.tooLarge("the value of etcd key "+k.key)
		}
	}
	return evs
}
