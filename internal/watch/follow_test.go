package watch

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBatchesGroupsByRevision covers a response holding several revisions,
// which etcd sends while a watcher catches up and which is hard to provoke
// on demand against a live server.
func TestBatchesGroupsByRevision(t *testing.T) {
	ev := func(rev int64, del bool, key string) *clientv3.Event {
		e := &clientv3.Event{Kv: &mvccpb.KeyValue{Key: []byte("/p/" + key), ModRevision: rev}}
		if del {
			e.Type = clientv3.EventTypeDelete
		} else {
			e.Kv.Value = []byte(key + "-value")
		}
		return e
	}
	f := &follower{w: New(Options{Prefix: "/p/"}), snapRev: 4, lastRev: 4}
	got := f.batches([]*clientv3.Event{
		ev(4, false, "in-snapshot"),
		ev(5, false, "a"), ev(5, true, "b"),
		ev(6, false, "c"),
		ev(7, false, "d"), ev(7, true, "e"),
	})
	want := "[{5 [a:a-value b:deleted]} {6 [c:c-value]} {7 [d:d-value e:deleted]}]"
	if s := format(got); s != want {
		t.Fatalf("batches = %s, want %s", s, want)
	}
}

func format(bs []Batch) string {
	var out []string
	for _, b := range bs {
		var cs []string
		for _, c := range b.Changes {
			v := string(c.Value)
			if c.Delete {
				v = "deleted"
			}
			cs = append(cs, c.Key+":"+v)
		}
		out = append(out, fmt.Sprintf("{%d %v}", b.Rev, cs))
		if b.Reset || b.Cause != "" {
			out = append(out, "unexpected Reset/Cause")
		}
	}
	return fmt.Sprint(out)
}
