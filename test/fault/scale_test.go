package fault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// maxRequestBytes is etcd's default --max-request-bytes (1.5 MiB), the
// largest request, and so about the largest value, etcd accepts.
const maxRequestBytes = 3 << 19

// maxTxnOps is etcd's default --max-txn-ops.
const maxTxnOps = 128

// TestFault8Scale: 10k keys under the prefix (the initial sync time is
// logged), a value just under etcd's request size limit, a 128-op
// transaction that must give exactly one signal, and keys with unicode and
// spaces. Every file must hold exactly its key's bytes.
func TestFault8Scale(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10k keys")
	}
	c := etcdproc.StartCluster(t, 1)
	cli := c.Client(t)
	want := map[string]string{}
	var ops []clientv3.Op
	for i := range 10000 {
		k, v := fmt.Sprintf("k%05d", i), fmt.Sprintf("value %d\n", i)
		if i%100 == 0 {
			v += string(allBytes())
		}
		want[k] = v
		ops = append(ops, clientv3.OpPut("/s/"+k, v))
	}
	txnAll(t, cli, ops)

	// 10k keys: initial sync.
	dir := t.TempDir()
	d := startDispenser(t, c.Endpoints(), nil, append([]string{"-p", "/s", "-t", dir, "-s", "HUP"}, childArgv(dir, modeDigest)...)...)
	ln, _ := d.out.next(t, "ready")
	if got := strings.TrimPrefix(ln.text, "ready "); got != digestOf(want) {
		t.Fatalf("child started with %s, want %s", got, digestOf(want))
	}
	synced := d.log.containing(t, "target in sync")
	t.Logf("fault 8 (10k keys): dispenser start→target in sync %v, →child ready with all files %v",
		synced.at.Sub(d.started), ln.at.Sub(d.started))
	checkFiles(t, dir, want)
	want["w"] = "1"
	warmUp(t, d, cli, "/s/w", "1", digestOf(want))

	// A value at the size limit: one byte over is refused by etcd, just
	// under is written.
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := cli.Put(ctx, "/s/too-big", strings.Repeat("x", maxRequestBytes+1)); !errors.Is(err, rpctypes.ErrRequestTooLarge) {
		t.Fatalf("put of %d bytes: %v, want %v", maxRequestBytes+1, err, rpctypes.ErrRequestTooLarge)
	}
	big := bytes.Repeat(allBytes(), (maxRequestBytes-1024)/256)
	put(t, cli, "/s/big", string(big))
	changed := time.Now()
	want["big"] = string(big)
	sig := awaitSignal(t, d, digestOf(want))
	t.Logf("fault 8 (%d-byte value among 10k keys): put→signal %v", len(big), sig.at.Sub(changed))
	checkFiles(t, dir, map[string]string{"big": want["big"]})

	// One transaction of 128 operations: one signal.
	ops = ops[:0]
	for i := range maxTxnOps - 28 {
		k := fmt.Sprintf("txn%03d", i)
		want[k] = k
		ops = append(ops, clientv3.OpPut("/s/"+k, k))
	}
	for i := range 28 {
		k := fmt.Sprintf("k%05d", i)
		delete(want, k)
		ops = append(ops, clientv3.OpDelete("/s/"+k))
	}
	txnAll(t, cli, ops)
	awaitSignal(t, d, digestOf(want))
	want["marker"] = "1"
	checkMarker(t, d, cli, "/s/marker", "1", digestOf(want))

	// Unicode and spaces.
	ops = ops[:0]
	for _, k := range []string{"héllo wörld.txt", "日本語/設定 ファイル.conf", "emoji 🎉 party", " leading and trailing ", "dir with space/file name"} {
		v := "ünïcødé ✓ " + k + "\n"
		want[k] = v
		ops = append(ops, clientv3.OpPut("/s/"+k, v))
	}
	txnAll(t, cli, ops)
	awaitSignal(t, d, digestOf(want))
	checkFiles(t, dir, want)
	checkNoStale(t, dir, want)
}

// allBytes is every byte value once.
func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// txnAll commits ops in transactions of at most maxTxnOps.
func txnAll(t *testing.T, cli *clientv3.Client, ops []clientv3.Op) {
	t.Helper()
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		batch := ops[:n]
		retry(t, fmt.Sprintf("txn of %d ops", n), func(ctx context.Context) error {
			_, err := cli.Txn(ctx).Then(batch...).Commit()
			return err
		})
		ops = ops[n:]
	}
}

// checkFiles reads every file of want from the target and compares it
// byte for byte (the child's digest covers files that should not be
// there).
func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		if string(b) != v {
			t.Fatalf("key %q: file has %d bytes that differ from the value's %d", k, len(b), len(v))
		}
	}
}
