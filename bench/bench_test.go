package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain runs the test binary as the bench child when dispenser starts
// it so (run re-executes os.Executable, which here is the test binary).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(child(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the whole bench with -quick against a real etcd, the
// built dispenser and etcha, and checks that every figure is printed with
// samples and, where it has a reference, a ratio to it; and that nothing
// is left in the temporary directory.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds etcd, dispenser and etcha and runs them for about a minute")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where setup puts its directory when there is no /dev/shm
	before := benchDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"-quick", "-json"}, &out, &errs); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errs.String())
	}
	var rows []row
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("output is not JSON rows: %v\n%s", err, out.String())
	}
	byName := map[string]row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	want := map[string]string{ // figure → the row its ratio is to ("" for none)
		"floor: put → bare watcher, 16 keys":                             "",
		rowPut16:                                                         "floor: put → bare watcher, 16 keys",
		"floor: 100-key txn → bare watcher":                              "",
		"100-key txn → signal":                                           "floor: 100-key txn → bare watcher",
		"floor: put → bare watcher, 16 keys (atomic run)":                "",
		"floor: put → bare watcher, 10k keys (atomic run)":               "",
		"put → signal, 16 keys, --layout=atomic, spaced as the 10k puts": "",
		"put → signal, 10k keys, --layout=atomic":                        "put → signal, 16 keys, --layout=atomic, spaced as the 10k puts",
		"floor: put → bare watcher, 16 keys (plain run)":                 "",
		"floor: put → bare watcher, 10k keys (plain run)":                "",
		"put → signal, 16 keys, --layout=plain, spaced as the 10k puts":  "",
		"put → signal, 10k keys, --layout=plain":                         "put → signal, 16 keys, --layout=plain, spaced as the 10k puts",
		"reference: Get + serial os.WriteFile, 10k × 1 KiB":              "",
		"initial sync, 10k × 1 KiB → child started":                      "reference: Get + serial os.WriteFile, 10k × 1 KiB",
		"peak RSS of dispenser, 10k sync":                                "",
		"etcha version (process start)":                                  "",
		"etcha render, 100-command JWT (verify + render)":                "etcha version (process start)",
		rowOutageSignal: "",
		rowOutageStart:  "",
	}
	for _, ph := range outagePhases {
		want[ph.row] = ""
	}
	for name, ref := range want {
		r, ok := byName[name]
		switch {
		case !ok:
			t.Errorf("no row %q in %s", name, out.String())
		case r.N < 2 || r.P95 < r.P50 || r.P99 < r.P95 || (r.P50 <= 0 && name != outagePhases[0].row):
			// (dispenser can connect a little before etcd answers reads)
			t.Errorf("row %q: n=%d p50=%v p95=%v p99=%v, want ≥2 samples, 0 < p50 ≤ p95 ≤ p99", name, r.N, r.P50, r.P95, r.P99)
		case r.Ref != ref || (ref != "" && r.Ratio <= 0):
			t.Errorf("row %q: ratio %v to %q, want a ratio to %q", name, r.Ratio, r.Ref, ref)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("got %d rows, want %d (without -big)", len(rows), len(want))
	}
	if after := benchDirs(t); after != before {
		t.Errorf("bench directories before the run: %d, after: %d; want it removed", before, after)
	}
}

// benchDirs counts the bench's temporary directories where setup makes them.
func benchDirs(t *testing.T) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(tempBase(), "dispenser-bench-*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// TestFleetRun runs the fleet figure with three dispensers through a real
// etcd gRPC proxy (about three and a half minutes: the dispensers settle on
// a liveness signal within four 30 s probe intervals, then one idle
// minute) and checks its rows: a latency to the last file with a ratio to
// the bare watcher, the watches etcd serves, and no full resync while
// idle (a dispenser that relied on progress requests, which the proxy
// does not answer, read the prefix every 60–90 s).
func TestFleetRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet through a gRPC proxy for about four minutes")
	}
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"-only", "fleet", "-fleet-size", "3", "-n", "2", "-json"}, &out, &errs); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errs.String())
	}
	var rows []row
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("output is not JSON rows: %v\n%s", err, out.String())
	}
	byName := map[string]row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	if r := byName["fleet: put → last of 3 files (gRPC proxy)"]; r.N != 2 || r.P50 <= 0 || r.Ratio <= 0 {
		t.Errorf("last-file row = %+v, want 2 samples and a ratio", r)
	}
	if r := byName["fleet: watchers etcd serves"]; r.P50 < 1 {
		t.Errorf("watchers etcd serves = %v, want at least the fleet's one", r.P50)
	}
	if r, ok := byName["fleet idle 1 min: dispensers' full resyncs"]; !ok || r.P50 != 0 {
		t.Errorf("full resyncs in the idle minute = %+v, want a row with 0\nstderr:\n%s", r, errs.String())
	}
	if !strings.Contains(errs.String(), "liveness signals logged: map[probe-watch:3]") {
		t.Errorf("stderr does not say that all 3 dispensers use probe watches:\n%s", errs.String())
	}
}
