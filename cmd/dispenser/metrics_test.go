package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
	r := start(t, s, append([]string{"-p", "/m", "-t", dir, "-s", "HUP", "--listen-http", addr, "--watch-probe", "300ms"},
		childArgs(dir, "serve")...)...)
	r.out.next(t, "ready")
	base := "http://" + addr

	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q after the first sync, want 200", code, body)
	}
	waitHTTP(t, base+"/healthz", 200)
	put(t, s, "/m/a", "2", "/m/../bad", "x")
	r.out.next(t, "HUP")
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		"dispenser_signals_sent_total 1",
		"dispenser_files_written_total 2",
		`dispenser_keys_rejected_total{reason=`,
		`dispenser_resyncs_total{cause="initial"} 1`,
		"dispenser_child_up 1",
		"dispenser_apply_duration_seconds_count",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	s.Stop()
	began := time.Now()
	reason := waitHTTP(t, base+"/healthz", 503)
	t.Logf("/healthz 503 %v after etcd stopped: %s", time.Since(began), reason)
	s.Restart()
	waitHTTP(t, base+"/healthz", 200)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP polls url until it answers with code, bounded by waitLong, and
// returns the body.
func waitHTTP(t *testing.T, url string, code int) string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var got int
	var body string
	for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
		if got, body = get(t, url); got == code {
			return body
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls, bounded by the deadline
	}
	t.Fatalf("GET %s = %d %q, want %d within %v", url, got, body, code, waitLong)
	return ""
}
