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

// snap is the content of the prefix at one revision.
type snap struct {
	rev     int64
	changes []Change
}

// snapshot reads the whole prefix (the range covering all prefixes, keeping
// only the keys under one) at one revision, PageSize keys per
// request. The first page fixes the revision; later pages read at that
// revision from just after the last key seen. Reads are linearizable (never
// WithSerializable), so the snapshot is at least as new as anything the
// cluster has acknowledged, and never older than events already sent.
func (w *Watcher) snapshot(ctx context.Context) (snap, error) {
	var s snap
	key, end := w.start, w.end
	for page := 0; ; page++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(w.pageSize)}
		if page > 0 {
			opts = append(opts, clientv3.WithRev(s.rev))
		}
		resp, err := w.get(ctx, key, opts...)
		if err != nil {
			return snap{}, err
		}
		if page == 0 {
			s.rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if p, ok := w.match(string(kv.Key)); ok {
				s.changes = append(s.changes, Change{Key: strings.TrimPrefix(string(kv.Key), p), Prefix: p, Value: kv.Value})
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			w.update(func(st *Status) { st.LastHeard = time.Now() })
			return s, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
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
