package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// valueSize is the size of every value the bench writes.
const valueSize = 1024

// Row names other rows refer to.
const (
	rowPut16 = "put → signal, 16 keys"
)

func key(prefix string, i int) string { return fmt.Sprintf("%sk%05d", prefix, i) }

// load puts n keys of valueSize bytes under prefix, 128 (etcd's default
// --max-txn-ops) per transaction.
func (e *env) load(ctx context.Context, prefix string, n int) error {
	for i := 0; i < n; i += 128 {
		var ops []clientv3.Op
		for k := i; k < min(i+128, n); k++ {
			ops = append(ops, clientv3.OpPut(key(prefix, k), value("init", valueSize)))
		}
		if _, err := e.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("load %s: %w", prefix, err)
		}
	}
	return nil
}

// loadOnce loads n keys under prefix unless it already holds n.
func (e *env) loadOnce(ctx context.Context, prefix string, n int) error {
	resp, err := e.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("count %s: %w", prefix, err)
	}
	if resp.Count == int64(n) {
		return nil
	}
	return e.load(ctx, prefix, n)
}

// latencies runs a dispenser on prefix (already loaded) with layout and
// a bare watcher, and measures n changes made by op(tag), each one setting
// watchKey to a value tagged tag; the child reads watchKey's file. Before
// each change it waits spacing. It returns the watcher's and the child's
// times in ms.
func (e *env) latencies(ctx context.Context, prefix, layout, watchKey string, n int, spacing time.Duration,
	op func(ctx context.Context, tag string) error) (floor, disp []float64, err error) {
	res, err := e.interleaved(ctx, []latCase{{prefix, layout, watchKey, op}}, n, spacing)
	if err != nil {
		return nil, nil, err
	}
	return res[0].floor, res[0].disp, nil
}

// latCase is one dispenser measured by interleaved.
type latCase struct {
	prefix, layout, watchKey string
	op                       func(ctx context.Context, tag string) error
}

type latResult struct{ floor, disp []float64 }

// interleaved measures several cases in turns: each round changes every
// case once, in order, each change spacing/len(cases) after the previous
// one, so each case's changes are spacing apart and every case meets the
// machine in the same state (after the same idle time). Each case has its
// own dispenser, child and bare watcher.
func (e *env) interleaved(ctx context.Context, cases []latCase, n int, spacing time.Duration) ([]latResult, error) {
	type running struct {
		p *proc
		w *watcher
	}
	rs := make([]running, len(cases))
	for i, c := range cases {
		target := filepath.Join(e.dir, fmt.Sprintf("target-%d-%s", i, c.layout))
		os.RemoveAll(target)
		defer os.RemoveAll(target)
		file := filepath.Join(target, strings.TrimPrefix(c.watchKey, c.prefix))
		p, err := e.startDispenser(c.prefix, target, c.layout, file)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		if _, err := p.await(ctx, "ready", ""); err != nil {
			return nil, err
		}
		w, err := e.watch(ctx, c.prefix)
		if err != nil {
			return nil, err
		}
		defer w.stop()
		rs[i] = running{p, w}
	}
	res := make([]latResult, len(cases))
	// The first change after the child starts is held back by dispenser's
	// start grace (2 s); waiting for it means the samples see steady state.
	for round := -1; round < n; round++ {
		for i, c := range cases {
			tag := fmt.Sprintf("s%d", round)
			if round >= 0 {
				time.Sleep(spacing / time.Duration(len(cases))) // the spacing the figure asks for, not synchronisation
			}
			began := time.Now()
			if err := c.op(ctx, tag); err != nil {
				return nil, err
			}
			seen, err := rs[i].w.await(ctx, c.watchKey, tag)
			if err != nil {
				return nil, err
			}
			read, err := rs[i].p.await(ctx, "hup", tag)
			if err != nil {
				return nil, err
			}
			if round >= 0 {
				res[i].floor = append(res[i].floor, ms(seen.Sub(began)))
				res[i].disp = append(res[i].disp, ms(read.Sub(began)))
			}
		}
	}
	return res, nil
}

func (e *env) putOne(k string) func(context.Context, string) error {
	return func(ctx context.Context, tag string) error {
		_, err := e.cli.Put(ctx, k, value(tag, valueSize))
		return err
	}
}

// putSmall: a single put → signal, 16 keys under the prefix.
func putSmall(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	const prefix = "/bench/small/"
	if err := e.load(ctx, prefix, 16); err != nil {
		return nil, err
	}
	floor, disp, err := e.latencies(ctx, prefix, "atomic", key(prefix, 0), cfg.n, 0, e.putOne(key(prefix, 0)))
	if err != nil {
		return nil, err
	}
	ref := dist("floor: put → bare watcher, 16 keys", "ms", floor)
	return []row{ref, dist(rowPut16, "ms", disp).withRatio(ref)}, nil
}

// txn100: one transaction putting all 100 keys under the prefix → signal.
func txn100(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	const prefix = "/bench/txn/"
	if err := e.load(ctx, prefix, 100); err != nil {
		return nil, err
	}
	op := func(ctx context.Context, tag string) error {
		ops := make([]clientv3.Op, 100)
		for i := range ops {
			ops[i] = clientv3.OpPut(key(prefix, i), value(tag, valueSize))
		}
		_, err := e.cli.Txn(ctx).Then(ops...).Commit()
		return err
	}
	floor, disp, err := e.latencies(ctx, prefix, "atomic", key(prefix, 99), cfg.n, 0, op)
	if err != nil {
		return nil, err
	}
	ref := dist("floor: 100-key txn → bare watcher", "ms", floor)
	return []row{ref, dist("100-key txn → signal", "ms", disp).withRatio(ref)}, nil
}

// putBig: a single put → signal with 10k keys under the prefix, in each
// layout, as a ratio to a put under the 16-key prefix in the same layout,
// measured in turns with it: puts are cfg.spacing apart, past the writer's
// reuse grace, and on a machine idle that long every process wakes up
// cold (the bare watcher's floor is higher than in the back-to-back
// 16-key figure), so the reference must meet the same conditions.
func putBig(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	const prefix, small = "/bench/big/", "/bench/small/"
	if err := e.load(ctx, prefix, 10000); err != nil {
		return nil, err
	}
	if err := e.load(ctx, small, 16); err != nil { // putSmall may not have run (-only)
		return nil, err
	}
	var rows []row
	for _, layout := range []string{"atomic", "plain"} {
		res, err := e.interleaved(ctx, []latCase{
			{small, layout, key(small, 1), e.putOne(key(small, 1))},
			{prefix, layout, key(prefix, 0), e.putOne(key(prefix, 0))},
		}, cfg.n, cfg.spacing)
		if err != nil {
			return nil, fmt.Errorf("--layout=%s: %w", layout, err)
		}
		ref := dist("put → signal, 16 keys, --layout="+layout+", spaced as the 10k puts", "ms", res[0].disp)
		rows = append(rows,
			dist("floor: put → bare watcher, 16 keys ("+layout+" run)", "ms", res[0].floor),
			dist("floor: put → bare watcher, 10k keys ("+layout+" run)", "ms", res[1].floor),
			ref,
			dist("put → signal, 10k keys, --layout="+layout, "ms", res[1].disp).withRatio(ref))
	}
	return rows, nil
}

// sync10k: the initial sync of the 10k keys putBig loaded → the child
// started, against one Get + serial os.WriteFile of the same data; and
// dispenser's peak RSS by then. Samples alternate the two.
func sync10k(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	const prefix = "/bench/big/"
	if err := e.loadOnce(ctx, prefix, 10000); err != nil { // putBig may not have run (-only)
		return nil, err
	}
	var ref, disp, rss []float64
	for i := range cfg.syncs {
		dir := filepath.Join(e.dir, fmt.Sprintf("sync-%d", i))
		took, err := e.getAndWrite(ctx, prefix, dir+"-ref")
		if err != nil {
			return nil, err
		}
		ref = append(ref, took)
		began := time.Now()
		p, err := e.startDispenser(prefix, dir, "atomic", filepath.Join(dir, "k00000"))
		if err != nil {
			return nil, err
		}
		started, err := p.await(ctx, "ready", "")
		var peak float64
		if err == nil {
			peak, err = p.peakRSS()
		}
		p.stop()
		os.RemoveAll(dir)
		if err != nil {
			return nil, err
		}
		disp, rss = append(disp, ms(started.Sub(began))), append(rss, peak)
	}
	r := dist("reference: Get + serial os.WriteFile, 10k × 1 KiB", "ms", ref)
	return []row{r, dist("initial sync, 10k × 1 KiB → child started", "ms", disp).withRatio(r),
		dist("peak RSS of dispenser, 10k sync", "MiB", rss)}, nil
}

// getAndWrite is the initial sync's reference: connect, one Get of the
// prefix, then os.WriteFile of each value in turn into a new dir. It
// returns the time in ms and removes dir.
func (e *env) getAndWrite(ctx context.Context, prefix, dir string) (float64, error) {
	defer os.RemoveAll(dir)
	began := time.Now()
	c, err := newClient(e.endpoint)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("reference get: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		if err := os.WriteFile(filepath.Join(dir, strings.TrimPrefix(string(kv.Key), prefix)), kv.Value, 0o600); err != nil {
			return 0, fmt.Errorf("reference write: %w", err)
		}
	}
	return ms(time.Since(began)), nil
}

// sync100k: with -big, the peak RSS (wait4's ru_maxrss) of dispenser
// --once syncing 100k keys × 1 KiB.
func sync100k(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	if !cfg.big {
		return nil, nil
	}
	const prefix = "/bench/huge/"
	if err := e.load(ctx, prefix, 100000); err != nil {
		return nil, err
	}
	var rss []float64
	for i := range min(cfg.syncs, 3) {
		dir := filepath.Join(e.dir, fmt.Sprintf("huge-%d", i))
		cctx, cancel := context.WithTimeout(ctx, waitLimit)
		cmd := exec.CommandContext(cctx, e.dispenser, "-p", prefix, "-t", dir, "--once", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS="+e.endpoint)
		out, err := cmd.CombinedOutput()
		cancel()
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("dispenser --once: %w\n%s", err, tail(out))
		}
		rss = append(rss, float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)/1024)
	}
	return []row{dist("peak RSS of dispenser --once, 100k sync", "MiB", rss)}, nil
}

// dist is the nearest-rank p50, p95 and p99 of xs.
func dist(name, unit string, xs []float64) row {
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(q float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return row{Name: name, Unit: unit, N: len(s), P50: at(0.50), P95: at(0.95), P99: at(0.99)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
