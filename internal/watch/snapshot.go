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

// page is one Get response of a snapshot, reduced to the keys under the
// prefixes.
type page struct {
	rev     int64 // the snapshot's revision, the same on every page
	index   int   // 0 for the first page
	last    bool  // no page follows
	changes []Change
}

// resync reads a snapshot and sends it with cause as one Reset batch, or
// with PagedResets as one Reset batch per page. It returns the snapshot's
// revision; or the etcd error that stopped the read, after which the
// consumer may have seen some Partial pages; or ctx's error.
func (w *Watcher) resync(ctx context.Context, out chan<- Batch, cause string) (int64, error) {
	if w.paged {
		return w.snapshot(ctx, func(p page) bool {
			return w.send(ctx, out, Batch{Rev: p.rev, Reset: true, Changes: p.changes, Cause: cause, Page: p.index, Partial: !p.last})
		})
	}
	var all []Change
	rev, err := w.snapshot(ctx, func(p page) bool {
		if all == nil {
			all = p.changes
		} else {
			all = append(all, p.changes...)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if !w.send(ctx, out, Batch{Rev: rev, Reset: true, Changes: all, Cause: cause}) {
		return 0, ctx.Err()
	}
	return rev, nil
}

// snapshot reads the whole prefix (the range covering all prefixes, keeping
// only the keys under one) at one revision, PageSize keys per request,
// and passes each page to emit before it reads the next one, so the next
// read overlaps whatever the consumer does with the page emit handed over.
// The first page fixes the revision; later pages read at that revision
// from just after the last key seen. Reads are linearizable (never
// WithSerializable), so the snapshot is at least as new as anything the
// cluster has acknowledged, and never older than events already sent.
// It returns the revision, the first Get error, or ctx's error if emit
// returned false.
func (w *Watcher) snapshot(ctx context.Context, emit func(page) bool) (int64, error) {
	var rev int64
	key, end := w.start, w.end
	for i := 0; ; i++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(w.pageSize)}
		if i > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := w.get(ctx, key, opts...)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			rev = resp.Header.Revision
		}
		p := page{rev: rev, index: i, last: !resp.More || len(resp.Kvs) == 0}
		for _, kv := range resp.Kvs {
			if pre, ok := w.match(string(kv.Key)); ok {
				p.changes = append(p.changes, Change{Key: strings.TrimPrefix(string(kv.Key), pre), Prefix: pre, Value: kv.Value})
			}
		}
		if p.last {
			w.update(func(st *Status) { st.LastHeard = time.Now() })
		} else {
			key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
		if !emit(p) {
			return 0, ctx.Err()
		}
		if p.last {
			return rev, nil
		}
	}
}

// get is one Get request bounded by RequestTimeout.
func (w *Watcher) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.reqTO)
	defer cancel()
	return w.client.Get(ctx, key, opts...)
}

// retryGet logs a failed snapshot and waits before the next attempt. It
// reports false if ctx was done first.
func (w *Watcher) retryGet(ctx context.Context, bo *backoff, err error) bool {
	d := bo.next()
	w.update(func(s *Status) {
		s.Connected = false
		s.LastError = err.Error()
	})
	msg := fmt.Sprintf("etcd get %s failed: %v; retrying in %s", w.prefix, err, d.Round(time.Millisecond))
	attrs := []any{"err", err, "endpoints", w.client.Endpoints()}
	if hint := errorHint(err); hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	w.log.Warn(msg, attrs...)
	return sleep(ctx, d)
}

// errorHint says what the operator can change for known etcd errors, or ""
// if there is nothing specific to say.
func errorHint(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return "check that the etcd user's role grants read permission on the prefix (etcdctl role grant-permission --prefix <role> read <prefix>)"
	case errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrAuthFailed):
		return "check the etcd username and password"
	case errors.Is(err, rpctypes.ErrNoLeader):
		return "the etcd member has no leader; check the cluster's health (etcdctl endpoint status)"
	case errors.Is(err, context.DeadlineExceeded):
		return "etcd did not answer in time; check the endpoints and the cluster's health"
	}
	return ""
}
