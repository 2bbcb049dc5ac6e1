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
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// BenchmarkPutToSignal: one put → the child has seen SIGHUP with the new
// content (etcd commit, watch, write, swap, signal, child reads the file).
func BenchmarkPutToSignal(b *testing.B) {
	_, r, c := benchDispenser(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprintf("v%d", i)
		if _, err := c.Put(ctx, "/b/k", v); err != nil {
			b.Fatal(err)
		}
		if line, _ := r.out.next(b, "HUP"); !strings.Contains(line, "k="+v) {
			b.Fatalf("signal %d saw %q", i, line)
		}
	}
}

// BenchmarkTxn100ToSignal: a 100-key transaction → one signal, all new.
func BenchmarkTxn100ToSignal(b *testing.B) {
	_, r, c := benchDispenser(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprintf("v%d", i)
		ops := make([]clientv3.Op, 100)
		for k := range ops {
			ops[k] = clientv3.OpPut(fmt.Sprintf("/b/k%03d", k), v)
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		if line, _ := r.out.next(b, "HUP"); strings.Count(line, "="+v) != 100 {
			b.Fatalf("signal %d did not see all 100 keys new", i)
		}
	}
}

func benchDispenser(b *testing.B) (*etcdtest.Server, *running, *clientv3.Client) {
	b.Helper()
	s := etcdtest.Start(b)
	c := s.Client(b)
	dir := b.TempDir()
	b.Setenv("ETCD_ENDPOINTS", s.Endpoint())
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: newLines(), errs: newLines(), done: make(chan error, 1), stop: cancel}
	args := append([]string{"-p", "/b", "-t", dir, "-s", "HUP", "--log-level", "warn"}, childArgs(dir, "serve")...)
	go func() { r.done <- run(ctx, args, r.out, r.errs) }()
	b.Cleanup(func() { cancel(); <-r.done })
	r.out.next(b, "ready")
	// Past the start grace (reloads right after the start are held), so
	// the loop measures steady state.
	if _, err := c.Put(ctx, "/b/warm-up", "1"); err != nil {
		b.Fatal(err)
	}
	r.out.next(b, "HUP")
	return s, r, c
}

// BenchmarkInitialSync10k measures the built binary's first sync of 10,000
// keys with --once: wall time and peak RSS (reported as metrics).
func BenchmarkInitialSync10k(b *testing.B) {
	s := etcdtest.Start(b)
	c := s.Client(b)
	ctx := context.Background()
	for t := 0; t < 10000; t += 128 {
		var ops []clientv3.Op
		for k := t; k < min(t+128, 10000); k++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/big/d%02d/key%05d", k%50, k), strings.Repeat("x", 512)))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	bin := filepath.Join(b.TempDir(), "dispenser")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	b.ResetTimer()
	var maxRSS int64
	for range b.N {
		dir := b.TempDir()
		cmd := exec.Command(bin, "-p", "/big", "-t", dir, "--once", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS="+s.Endpoint())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("dispenser --once: %v\n%s", err, out)
		}
		maxRSS = max(maxRSS, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	}
	b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/sync")
}

// BenchmarkPatternPutToRun: an etcd put of a new pattern JWT with one
// command → that command has run (etcd commit, watch, verify, render,
// diff, save, run /usr/bin/bash writing a file). It reports the median.
func BenchmarkPatternPutToRun(b *testing.B) {
	s := etcdtest.Start(b)
	c := s.Client(b)
	k := newSigner(b)
	dir, out := b.TempDir(), b.TempDir()
	b.Setenv("ETCD_ENDPOINTS", s.Endpoint())
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: newLines(), errs: newLines(), done: make(chan error, 1), stop: cancel}
	args := append([]string{"-p", "/b/files", "--patterns", "/b/patterns", "--verify-key", k.pub, "-t", dir,
		"--state-dir", b.TempDir(), "--log-level", "warn"}, childArgs(dir, "serve")...)
	go func() { r.done <- run(ctx, args, r.out, r.errs) }()
	b.Cleanup(func() { cancel(); <-r.done })
	r.out.next(b, "ready")
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		path := filepath.Join(out, fmt.Sprintf("ran%d", i))
		jwt := k.sign(fmt.Sprintf(`{run: [{id: 'touch', always: true, change: 'touch %s'}]}`, path))
		began := time.Now()
		if _, err := c.Put(ctx, "/b/patterns/app", jwt); err != nil {
			b.Fatal(err)
		}
		for deadline := began.Add(waitLong); ; time.Sleep(time.Millisecond) { // poll: the command leaves only the file
			if _, err := os.Stat(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("pattern %d did not run within %v; log:\n%s", i, waitLong, r.errs.String())
			}
		}
		took = append(took, time.Since(began))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms/put-to-run")
}
