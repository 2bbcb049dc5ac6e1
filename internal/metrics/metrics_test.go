package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	m := New()
	var healthErr error
	ready := false
	h := m.Handler(Options{Health: func() error { return healthErr }, Ready: func() bool { return ready }})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}

	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz before ready = %d, want 503", code)
	}
	ready = true
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz when ready = %d, want 200", code)
	}
	healthErr = errors.New("not connected to etcd")
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "not connected to etcd") {
		t.Fatalf("/healthz = %d %q, want 503 with the reason", code, body)
	}
	healthErr = nil
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz when healthy = %d, want 200", code)
	}

	if _, body := get("/metrics"); !strings.Contains(body, "dispenser_seconds_since_last_apply -1") {
		t.Fatalf("before any write seconds_since_last_apply should be -1:\n%s", body)
	}
	m.Received(7, "initial")
	m.Received(9, "compacted")
	m.Applied(9, 3, 1, 2*time.Millisecond)
	m.Rejected("escapes-target")
	m.Signalled()
	m.ChildStarted()
	m.ChildExited(137)
	_, body := get("/metrics")
	for _, want := range []string{
		"dispenser_applied_revision 9",
		"dispenser_etcd_revision 9",
		"dispenser_files_written_total 3",
		"dispenser_files_removed_total 1",
		`dispenser_keys_rejected_total{reason="escapes-target"} 1`,
		`dispenser_resyncs_total{cause="compacted"} 1`,
		`dispenser_resyncs_total{cause="initial"} 1`,
		"dispenser_watch_restarts_total 1",
		"dispenser_signals_sent_total 1",
		"dispenser_child_up 0",
		"dispenser_child_exit_code 137",
		"dispenser_apply_duration_seconds_count 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "dispenser_seconds_since_last_apply -1") {
		t.Errorf("seconds_since_last_apply still -1 after a write")
	}
}

func TestListenBadAddress(t *testing.T) {
	if _, err := New().Listen(Options{Addr: "127.0.0.1:not-a-port"}); err == nil {
		t.Fatal("Listen on a bad address succeeded")
	}
}

// TestPatternMetrics: per pattern, runs, failures, refusals by reason and
// the last accepted iat.
func TestPatternMetrics(t *testing.T) {
	m := New()
	m.PatternRan("web", false)
	m.PatternRan("web", true)
	m.PatternRan("db", false)
	m.PatternRefused("web", "signature")
	m.PatternRefused("web", "signature")
	m.PatternAccepted("web", time.Unix(1700000000, 0))
	rec := httptest.NewRecorder()
	m.Handler(Options{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`dispenser_pattern_runs_total{pattern="web"} 2`,
		`dispenser_pattern_runs_total{pattern="db"} 1`,
		`dispenser_pattern_failures_total{pattern="web"} 1`,
		`dispenser_pattern_refused_total{pattern="web",reason="signature"} 2`,
		`dispenser_pattern_accepted_iat_seconds{pattern="web"} 1.7e+09`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `dispenser_pattern_failures_total{pattern="db"}`) {
		t.Errorf("db never failed but has a failures sample")
	}
}
