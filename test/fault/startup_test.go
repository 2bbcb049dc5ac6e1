package fault_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// TestFault5StartUnreachable: etcd is down when dispenser starts. It must
// log its retries, start the child only after the first complete sync
// (whose files the child's "ready" line lists), and with --initial-timeout
// give up with a clear error and a non-zero status.
func TestFault5StartUnreachable(t *testing.T) {
	t.Run("waits", func(t *testing.T) {
		c := etcdproc.StartCluster(t, 1)
		m := c.Member(0)
		put(t, m.Client(t), "/u/a", "1", "/u/b/c", "2")
		m.Stop()
		dir := t.TempDir()
		d := startDispenser(t, c.Endpoints(), nil, append([]string{"-p", "/u", "-t", dir, "-s", "HUP"}, childArgv(dir, modeServe)...)...)
		for range 2 {
			d.log.containing(t, "retrying")
		}
		if got := d.out.String(); got != "" {
			t.Fatalf("the child printed %q before etcd was up", got)
		}
		if got := state(dir); got != "" {
			t.Fatalf("target holds %q before etcd was up", got)
		}
		m.Start()
		back := time.Now()
		ln, _ := d.out.next(t, "ready")
		if got, want := ln.text, "ready a=1,b/c=2"; got != want {
			t.Fatalf("child started with %q, want %q", got, want)
		}
		t.Logf("fault 5 (unreachable at start): back→child ready with all files %v", ln.at.Sub(back))
	})
	t.Run("initial-timeout", func(t *testing.T) {
		dir := t.TempDir()
		dead := "http://127.0.0.1:1" // nothing listens on port 1
		d := startDispenser(t, []string{dead}, nil,
			append([]string{"-p", "/u", "-t", dir, "-s", "HUP", "--initial-timeout=2s"}, childArgv(dir, modeServe)...)...)
		code := d.exit(t)
		took := time.Since(d.started)
		log := d.log.String()
		if strings.Contains(log, "unknown flag: --initial-timeout") {
			t.Skipf("dispenser has no --initial-timeout yet: %s", log)
		}
		if code == 0 {
			t.Fatalf("dispenser exited 0 although etcd never answered; log:\n%s", log)
		}
		last := lastLine(log)
		if !strings.Contains(last, "etcd") || !strings.Contains(last, "initial-timeout") {
			t.Errorf("last line of the log %q should name etcd and --initial-timeout", last)
		}
		if got := d.out.String(); got != "" {
			t.Errorf("the child ran (%q) although no sync completed", got)
		}
		if took < 2*time.Second || took > 30*time.Second {
			t.Errorf("dispenser gave up after %v with --initial-timeout=2s", took)
		}
		t.Logf("fault 5 (--initial-timeout=2s): exit %d after %v: %s", code, took.Round(time.Millisecond), last)
	})
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}
