package etcha

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCompareURLTimesOut checks that a JWT server that never answers makes
// compare fail with a timeout instead of hanging.
func TestCompareURLTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hold the request until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	a, _ := newApp(t, baseConfig)
	a.HTTPTimeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- a.Compare(context.Background(), srv.URL+"/new.jwt", srv.URL+"/old.jwt", false) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "Client.Timeout") || exitCode(err) != 2 {
			t.Fatalf("Compare() = %v (exit %d), want a timeout error with exit 2", err, exitCode(err))
		}
	case <-time.After(20 * time.Second):
		release <- struct{}{} // unblock the handler so the goroutine can end
		t.Fatal("Compare() did not return: the fetch has no timeout")
	}
}

// TestDefaultHTTPTimeout checks the zero App uses a 10 s timeout.
func TestDefaultHTTPTimeout(t *testing.T) {
	if got, want := (&App{}).httpClient().Timeout, 10*time.Second; got != want {
		t.Fatalf("timeout = %v, want %v", got, want)
	}
}
