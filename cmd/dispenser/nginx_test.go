package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// nginxConf is a minimal nginx configuration that answers every request with
// body, on 127.0.0.1:port, keeping all its files under state.
func nginxConf(state string, port int, body string) string {
	return fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log stderr notice;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location / { return 200 "%[3]s"; }
  }
}
`, state, port, body)
}

// TestNginxReloadsOnChange drives a real nginx, as in the README: its config
// comes from etcd, and a change reaches the server through SIGHUP, without
// a restart.
func TestNginxReloadsOnChange(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
	}
	if _, err := os.Stat(nginx); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("nginx is not installed; .ci/run installs nginx-light")
		}
		t.Skip("nginx not installed (apt-get install nginx-light)")
	}
	s := etcdtest.Start(t)
	state, dir := t.TempDir(), t.TempDir()
	port := etcdtest.FreePort(t)
	put(t, s, "/web/nginx.conf", nginxConf(state, port, "v1"))
	r := start(t, s, "-p", "/web", "-t", dir, "-s", "SIGHUP", "--",
		nginx, "-p", state, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;")

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitBody(t, url, "v1")
	put(t, s, "/web/nginx.conf", nginxConf(state, port, "v2"))
	r.errs.containing(t, "reconfiguring") // nginx got SIGHUP; new workers take over
	waitBody(t, url, "v2")
	// v2 may have waited for the child's start grace; v3 cannot: it measures
	// a reload as a user sees it, from the put to a client's answer.
	put(t, s, "/web/nginx.conf", nginxConf(state, port, "v3"))
	putAt := time.Now()
	waitBody(t, url, "v3")
	t.Logf("put → a new HTTP client gets the new body from nginx: %v", time.Since(putAt).Round(100*time.Microsecond))

	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("nginx after SIGTERM: %v; log:\n%s", err, r.errs.String())
	}
}

// waitBody polls url until it answers with want, for at most waitLong: the
// server's readiness has no event to wait on but its answer.
func waitBody(t *testing.T, url, want string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(waitLong)
	var last string
	for i := 0; time.Now().Before(deadline) && i < 10000; i++ {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if last = strings.TrimSpace(string(b)); last == want {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond) // pacing between polls, bounded by the deadline
	}
	t.Fatalf("GET %s: last answer %q, want %q", url, last, want)
}
