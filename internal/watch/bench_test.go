package watch_test

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

func BenchmarkPutToBatch(b *testing.B) {
	s := etcdtest.Start(b)
	c := s.Client(b)
	h := startWatcher(b, s, watch.Options{Prefix: "/app/"})
	nextReset(b, h)
	b.ResetTimer()
	for i := range b.N {
		rev := put(b, c, "/app/k", fmt.Sprint(i))
		if got := next(b, h.ch, wait); got.Rev != rev {
			b.Fatalf("batch rev %d, want %d", got.Rev, rev)
		}
	}
}

func BenchmarkTxn100ToBatch(b *testing.B) {
	s := etcdtest.Start(b)
	c := s.Client(b)
	h := startWatcher(b, s, watch.Options{Prefix: "/app/"})
	nextReset(b, h)
	ops := make([]clientv3.Op, 100)
	b.ResetTimer()
	for i := range b.N {
		for j := range ops {
			ops[j] = clientv3.OpPut(fmt.Sprintf("/app/k%03d", j), fmt.Sprint(i))
		}
		rev := txn(b, c, ops...)
		if got := next(b, h.ch, wait); got.Rev != rev || len(got.Changes) != 100 {
			b.Fatalf("batch rev %d with %d changes, want rev %d with 100", got.Rev, len(got.Changes), rev)
		}
	}
}
