package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestHealthAndMetrics: /readyz after the first sync, /metrics with the
// applied revision, and /healthz turning 503 with a reason while etcd is
// down and 200 once it is back.
func TestHealthAndMetrics(t *testing.T) {
	s := etcdtest.Start(t)
	put(t, s, "/m/a", "1")
	addr := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	dir := t.TempDir()
	r := start(t, s, append([]string{"-p", "/m", "-t", dir, "-s", "HUP", "--listen-http", addr},
		childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	base := "http://" + addr

	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q after the first sync, want 200", code, body)
	}
	waitHTTP(t, base+"/healthz", 200)
	c := s.Client(t)
	if _, err := c.Txn(context.Background()).Then(clientv3.OpPut("/m/a", "2"), clientv3.OpPut("/m/../bad", "x")).Commit(); err != nil {
		t.Fatal(err)
	}
	r.out.next(t, "HUP")
	waitMetrics(t, base+"/metrics",
		"dispenser_signals_sent_total 1",
		"dispenser_files_written_total 2",
		`dispenser_keys_rejected_total{reason="escapes-target"} 1`,
		`dispenser_resyncs_total{cause="initial"} 1`,
		"dispenser_child_up 1",
		"dispenser_apply_duration_seconds_count 2",
	)

	s.Stop()
	began := time.Now()
	reason := waitHTTP(t, base+"/healthz", 503)
	t.Logf("/healthz 503 %v after etcd stopped: %s", time.Since(began), reason)
	r.errs.containing(t, "lost the connection to etcd")
	s.Restart()
	waitHTTP(t, base+"/healthz", 200)
	r.errs.containing(t, "connected to etcd again")
}

// waitMetrics polls /metrics until every wanted line is there: the child
// can see its signal a moment before the counter is updated.
func waitMetrics(t *testing.T, url string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var missing []string
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		_, body := get(t, url)
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls, bounded by the deadline
	}
	t.Fatalf("/metrics still lacks %q after %v", missing, waitLong)
}

// TestHealthWhileConnecting: while dispenser cannot log in to etcd, the
// probes answer 503 saying so (not "connection refused").
func TestHealthWhileConnecting(t *testing.T) {
	t.Setenv("ETCD_ENDPOINTS", "http://127.0.0.1:1") // nothing listens there
	t.Setenv("ETCD_USERNAME", "someone")
	t.Setenv("ETCD_PASSWORD", "pw")
	addr := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-p", "/x", "-t", t.TempDir(), "--listen-http", addr}, newLines(), newLines())
	}()
	body := waitHTTP(t, "http://"+addr+"/healthz", 503)
	if !strings.Contains(body, "connecting to etcd") {
		t.Fatalf("/healthz body %q, want it to say dispenser is connecting", body)
	}
	if code, _ := get(t, "http://"+addr+"/readyz"); code != 503 {
		t.Fatalf("/readyz = %d while connecting, want 503", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel while connecting: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatalf("run did not stop within %v of cancel while connecting", waitLong)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, err := fetch(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code, body
}

func fetch(url string) (int, string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHTTP polls url until it answers with code, bounded by waitLong, and
// returns the body.
func waitHTTP(t *testing.T, url string, code int) string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var got int
	var body string
	for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
		var err error
		if got, body, err = fetch(url); err == nil && got == code {
			return body
		} else if err != nil {
			body = err.Error() // not listening yet, or restarting
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls, bounded by the deadline
	}
	t.Fatalf("GET %s = %d %q, want %d within %v", url, got, body, code, waitLong)
	return ""
}
