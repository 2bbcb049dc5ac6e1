// Package etcdtest runs a real etcd server inside the test process, for
// tests only. It uses go.etcd.io/etcd/server/v3/embed on 127.0.0.1, so tests
// never need an etcd binary or the network beyond loopback.
//
// It deliberately does not fake anything: a Server is a single-member etcd
// cluster with its own data directory, which a test may stop and start again
// (on the same or another client port) to exercise reconnects and compaction.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long a server may take to become ready. It is
// generous because CI runs on a slow, shared 2-core machine.
const startTimeout = 60 * time.Second

// Server is one embedded etcd member. Its methods must be called from the
// test goroutine.
type Server struct {
	t        testing.TB
	dir      string
	peerPort int
	tweak    func(*embed.Config)
	scheme   string

	etcd       *embed.Etcd
	clientPort int
}

// Option changes the embed.Config before every start of the server, e.g. to
// enable TLS. An option that sets https client URLs must also set
// ClientTLSInfo.
type Option func(*embed.Config)

// WithTLS serves clients over TLS with the given files. With clientCA set,
// clients must present a certificate signed by it.
func WithTLS(certFile, keyFile, clientCA string) Option {
	return func(cfg *embed.Config) {
		cfg.ClientTLSInfo.CertFile = certFile
		cfg.ClientTLSInfo.KeyFile = keyFile
		if clientCA != "" {
			cfg.ClientTLSInfo.TrustedCAFile = clientCA
			cfg.ClientTLSInfo.ClientCertAuth = true
		}
	}
}

// Start starts a fresh server on a free 127.0.0.1 port and registers its
// shutdown with t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), scheme: "http"}
	s.tweak = func(cfg *embed.Config) {
		for _, o := range opts {
			o(cfg)
		}
	}
	probe := embed.NewConfig()
	s.tweak(probe)
	if probe.ClientTLSInfo.CertFile != "" {
		s.scheme = "https"
	}
	s.peerPort = freePort(t)
	s.StartOn(freePort(t))
	t.Cleanup(s.Stop)
	return s
}

// StartOn (re)starts the server on the given client port with the data it
// had before. It fails the test if the server does not become ready.
func (s *Server) StartOn(port int) {
	s.t.Helper()
	if s.etcd != nil {
		s.t.Fatalf("etcdtest: StartOn while running; call Stop first")
	}
	cfg := embed.NewConfig()
	cfg.Dir = s.dir
	cfg.Name = "etcdtest"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	client := url.URL{Scheme: s.scheme, Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.peerPort))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s.tweak(cfg)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		s.t.Fatalf("etcdtest: start etcd on port %d: %v", port, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		s.t.Fatalf("etcdtest: etcd failed while starting: %v", err)
	case <-time.After(startTimeout):
		e.Close()
		s.t.Fatalf("etcdtest: etcd not ready after %v", startTimeout)
	}
	s.etcd, s.clientPort = e, port
}

// Stop shuts the server down; its data stays for a later StartOn. Stopping
// a stopped server does nothing.
func (s *Server) Stop() {
	if s.etcd == nil {
		return
	}
	s.etcd.Close()
	s.etcd = nil
}

// Restart stops the server and starts it again on the same client port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.StartOn(s.clientPort)
}

// Port is the client port the server listens (or last listened) on.
func (s *Server) Port() int { return s.clientPort }

// Endpoint is the client URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Endpoint() string {
	return fmt.Sprintf("%s://127.0.0.1:%d", s.scheme, s.clientPort)
}

// Client returns a client for the server, closed at test cleanup. Use it to
// put, delete and compact from the test.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int { return freePort(t) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
