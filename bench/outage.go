package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// outagePhases are the beginnings of the dispenser log messages
// (--log-format=json) that mark each step after etcd is back, in order,
// and the row each becomes. Between the watch ending and the resync,
// dispenser waits out its resync backoff (the message says how long).
var outagePhases = []struct{ msg, row string }{
	{"connected to etcd again", "outage: etcd ready → dispenser reconnected"},
	{"etcd watch of ", "outage: etcd ready → watch ended (compacted)"},
	{"full resync from etcd", "outage: etcd ready → resync read"},
	{"files updated", "outage: etcd ready → files written, signal sent"}, // logged after the signal
}

// Rows of the outage figure besides outagePhases: etcd's own start, and the
// last step, the child having read the new file.
const (
	rowOutageStart  = "outage: etcd process start → ready"
	rowOutageSignal = "outage: etcd ready → child read the new file"
)

// outage: etcd goes away; while dispenser cannot reach it a key changes and
// the history is compacted (etcd restarted on a port dispenser does not
// know); then etcd comes back where dispenser looks. Each step is measured
// from the moment a new client could read from etcd again: dispenser's
// reconnection, its resync and its write (from the times in its JSON log),
// and the child having read the new file. "Ready" is a new client's first
// successful read; dispenser's connection can be up a few milliseconds
// before that (a negative time), as etcd accepts connections before it
// serves reads.
func outage(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	const prefix = "/bench/outage/"
	if err := e.load(ctx, prefix, 16); err != nil {
		return nil, err
	}
	target := filepath.Join(e.dir, "target-outage")
	defer os.RemoveAll(target)
	p, err := e.startDispenser(prefix, target, "atomic", filepath.Join(target, "k00000"),
		"--log-format", "json", "--log-level", "info")
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if _, err := p.await(ctx, "ready", ""); err != nil {
		return nil, err
	}
	// Past the start grace, so a held reload does not count.
	if _, err := e.cli.Put(ctx, key(prefix, 0), value("warm", valueSize)); err != nil {
		return nil, err
	}
	if _, err := p.await(ctx, "hup", "warm"); err != nil {
		return nil, err
	}
	var started []float64 // etcd process start → ready: etcd's own time
	steps := make([][]float64, len(outagePhases)+1)
	for i := range cfg.syncs {
		tag := fmt.Sprintf("o%d", i)
		began := time.Now()
		if err := e.changeUnseen(ctx, key(prefix, 0), tag); err != nil {
			return nil, err
		}
		e.logf("outage %d: etcd killed, restarted elsewhere, changed, compacted and stopped in %v", i, time.Since(began).Round(time.Millisecond))
		back := time.Now()
		if err := e.spawnEtcd(e.endpoint); err != nil {
			return nil, err
		}
		ready, err := e.awaitEtcd(ctx, e.endpoint)
		if err != nil {
			return nil, err
		}
		read, err := p.await(ctx, "hup", tag)
		if err != nil {
			return nil, err
		}
		at, err := p.logTimes(ctx, back)
		if err != nil {
			return nil, err
		}
		started = append(started, ms(ready.Sub(back)))
		for j, t := range append(at, read) {
			steps[j] = append(steps[j], ms(t.Sub(ready)))
		}
	}
	rows := []row{dist(rowOutageStart, "ms", started)}
	for j, s := range steps {
		name := rowOutageSignal
		if j < len(outagePhases) {
			name = outagePhases[j].row
		}
		rows = append(rows, dist(name, "ms", s))
	}
	return rows, nil
}

// changeUnseen kills etcd, restarts it on a port dispenser does not know,
// sets k to a value tagged tag there, compacts the history past it and
// stops etcd again.
func (e *env) changeUnseen(ctx context.Context, k, tag string) error {
	e.stopEtcd(syscall.SIGKILL) // a crash; what etcd committed is on disk (fsync is on)
	hidden := "http://127.0.0.1:" + freePort()
	if err := e.spawnEtcd(hidden); err != nil {
		return err
	}
	defer e.stopEtcd(syscall.SIGTERM) // quick: only c, closed first, is connected
	if _, err := e.awaitEtcd(ctx, hidden); err != nil {
		return err
	}
	c, err := newClient(hidden)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Put(ctx, k, value(tag, valueSize)); err != nil {
		return fmt.Errorf("put while dispenser is away: %w", err)
	}
	// One more revision, so that the compaction removes the put's own and
	// dispenser's watch cannot resume: it has to read the prefix again.
	resp, err := c.Put(ctx, "/bench/elsewhere", tag)
	if err != nil {
		return fmt.Errorf("put while dispenser is away: %w", err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("compact while dispenser is away: %w", err)
	}
	return nil
}

// logTimes returns, for each of outagePhases, the time of its first
// message in dispenser's JSON log after since. The child has been
// signalled when this is called, so the messages are written; it still
// polls briefly for the file to be flushed.
func (p *proc) logTimes(ctx context.Context, since time.Time) ([]time.Time, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		at, missing := p.scanLog(since)
		if missing == "" {
			return at, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b, _ := os.ReadFile(p.errLog)
			return nil, fmt.Errorf("dispenser did not log %q after etcd came back; its log:\n%s", missing, tail(b))
		}
		time.Sleep(10 * time.Millisecond) // bounded by deadline: the log is written by another process
	}
}

// scanLog reads the log once; missing names the first message not found.
func (p *proc) scanLog(since time.Time) (at []time.Time, missing string) {
	f, err := os.Open(p.errLog)
	if err != nil {
		return nil, outagePhases[0].msg
	}
	defer f.Close()
	found := map[string]time.Time{}
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var l struct {
			Time time.Time
			Msg  string
		}
		if json.Unmarshal(s.Bytes(), &l) != nil || l.Time.Before(since) {
			continue
		}
		for _, ph := range outagePhases {
			if _, ok := found[ph.msg]; !ok && strings.HasPrefix(l.Msg, ph.msg) {
				found[ph.msg] = l.Time
			}
		}
	}
	for _, ph := range outagePhases {
		t, ok := found[ph.msg]
		if !ok {
			return nil, ph.msg
		}
		at = append(at, t)
	}
	return at, ""
}
