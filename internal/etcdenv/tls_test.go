package etcdenv

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// okTimeout bounds calls that must succeed; failTimeout bounds calls that
// must fail, which the client retries until the deadline.
const (
	okTimeout   = 30 * time.Second
	failTimeout = 2 * time.Second
)

func TestTLS(t *testing.T) {
	p := newPKI(t)
	wrong := newPKI(t)
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", p.ca)
	srv := etcdtest.Start(t, etcdtest.WithTLS(
		writeFile(t, dir, "server.pem", p.serverCert),
		writeFile(t, dir, "server-key.pem", p.serverKey),
		caFile))
	endpoint := srv.Endpoint()
	if !strings.HasPrefix(endpoint, "https://") {
		t.Fatalf("Endpoint() = %q, want https://", endpoint)
	}
	hostPort := strings.TrimPrefix(endpoint, "https://")
	certFile := writeFile(t, dir, "client.pem", p.clientCert)
	keyFile := writeFile(t, dir, "client-key.pem", p.clientKey)

	tests := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"PEM in values", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_SERVER_CA": p.ca, "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": p.clientKey}, true},
		{"PEM in files", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_SERVER_CA_FILE": caFile, "ETCD_CLIENT_CERT_FILE": certFile, "ETCD_CLIENT_KEY_FILE": keyFile}, true},
		{"endpoint without scheme", map[string]string{"ETCD_ENDPOINTS": hostPort,
			"ETCD_SERVER_CA_FILE": caFile, "ETCD_CLIENT_CERT_FILE": certFile, "ETCD_CLIENT_KEY_FILE": keyFile}, true},
		{"skip verify without CA", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_INSECURE_SKIP_VERIFY": "true", "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": p.clientKey}, true},
		{"wrong CA", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_SERVER_CA": wrong.ca, "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": p.clientKey}, false},
		{"system roots", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": p.clientKey}, false},
		{"skip verify without client cert", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_INSECURE_SKIP_VERIFY": "true"}, false},
		{"client cert from another CA", map[string]string{"ETCD_ENDPOINTS": endpoint,
			"ETCD_SERVER_CA": p.ca, "ETCD_CLIENT_CERT": wrong.clientCert, "ETCD_CLIENT_KEY": wrong.clientKey}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, tc.env)
			err := putGet(t, c, "/tls/"+tc.name, tc.ok)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("put and get: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("put and get succeeded, want a TLS failure")
			case !tc.ok:
				t.Logf("put failed as expected: %v", err)
			}
		})
	}
}

// newClient builds a client from env, closed at test cleanup.
func newClient(t *testing.T, env map[string]string) *clientv3.Client {
	t.Helper()
	cfg, err := Config(MapLookup(env))
	if err != nil {
		t.Fatalf("Config() error = %v", err)
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putGet puts key and reads it back, within okTimeout if it is expected to
// work and within failTimeout otherwise.
func putGet(t *testing.T, c *clientv3.Client, key string, ok bool) error {
	t.Helper()
	timeout := failTimeout
	if ok {
		timeout = okTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := c.Put(ctx, key, "v"); err != nil {
		return err
	}
	resp, err := c.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get %s = %v, want one key with value v", key, resp.Kvs)
	}
	return nil
}

// TestTrailingCommaConnects checks that an ETCD_ENDPOINTS with a trailing
// comma, which Load accepts with a warning, reaches a real etcd.
func TestTrailingCommaConnects(t *testing.T) {
	srv := etcdtest.Start(t)
	env, err := Load(MapLookup(map[string]string{"ETCD_ENDPOINTS": srv.Endpoint() + ","}))
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if len(env.Warnings) != 1 {
		t.Errorf("Warnings = %q, want one about the empty entry", env.Warnings)
	}
	c, err := clientv3.New(env.Config)
	if err != nil {
		t.Fatalf("clientv3.New() error = %v", err)
	}
	defer c.Close()
	if err := putGet(t, c, "/comma", true); err != nil {
		t.Fatalf("put and get through %q: %v", env.Config.Endpoints, err)
	}
}

// TestNewDoesNotBlock checks that clientv3.New returns at once when etcd is
// down, so callers own the retrying.
func TestNewDoesNotBlock(t *testing.T) {
	t.Parallel()
	port := etcdtest.FreePort(t)
	cfg, err := Config(MapLookup(map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:" + strconv.Itoa(port)}))
	if err != nil {
		t.Fatalf("Config() error = %v", err)
	}
	start := time.Now()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New() with etcd down: %v, want a client that connects later", err)
	}
	defer c.Close()
	if d := time.Since(start); d >= cfg.DialTimeout {
		t.Errorf("clientv3.New() took %v, want less than DialTimeout %v", d, cfg.DialTimeout)
	}
	if err := putGet(t, c, "/down", false); err == nil {
		t.Fatalf("put with etcd down succeeded")
	}
}
