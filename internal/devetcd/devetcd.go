// Package devetcd runs a single-member etcd server inside the process, for
// trying dispenser and etcha out when no cluster is at hand
// (--embedded-etcd). It is a development convenience, not a production
// deployment: one member, no TLS, no auth, listening where it is told
// (loopback by default).
//
// Binaries built with the "noembed" tag leave this package's heavy
// dependency (the etcd server) out; see cmd/dispenser/embedded*.go.
package devetcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// DefaultListen is where the embedded server accepts clients unless told
// otherwise: etcd's usual client port, on loopback only.
const DefaultListen = "127.0.0.1:2379"

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
}

// Start starts etcd with its data in dir, serving clients on listen
// (host:port) and peers on the next port up. It returns once the server is
// ready, or an error if it fails or ctx ends first.
func Start(ctx context.Context, dir, listen string) (*Server, error) {
	client, err := url.Parse("http://" + listen)
	if err != nil || client.Port() == "" {
		return nil, fmt.Errorf("embedded etcd listen address %q: want host:port such as %s", listen, DefaultListen)
	}
	port, err := strconv.Atoi(client.Port())
	if err != nil {
		return nil, fmt.Errorf("embedded etcd listen address %q: bad port: %w", listen, err)
	}
	peer := *client
	if port != 0 { // with port 0 both pick a free port
		peer.Host = net.JoinHostPort(client.Hostname(), strconv.Itoa(port+1))
	}

	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "dispenser-dev"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s on %s: %w", dir, listen, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd on %s: %w", listen, err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		e.Close()
		return nil, fmt.Errorf("embedded etcd on %s: not ready after a minute", listen)
	}
}

// Endpoint is the URL clients use to reach the server.
func (s *Server) Endpoint() string {
	return "http://" + s.etcd.Clients[0].Addr().String()
}

// Close stops the server; its data stays in the directory.
func (s *Server) Close() { s.etcd.Close() }
