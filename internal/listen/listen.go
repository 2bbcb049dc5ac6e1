// Package listen is the HTTPS listener of etcha's listen mode (spec §4.10):
// one TLS server, rate limited per client IP on every endpoint, that
// serves the push receiver (POST /etcha/v1/push/<source>, spec §4.8,
// §11.7), webhook paths (spec §4.7), shell sessions over server-sent events
// (/etcha/v1/shell/<source>, spec §4.9) and any handler a caller adds with
// [Server.Handle] (etcha adds the metrics endpoint).
//
// It deliberately knows nothing about sources, JWTs or commands: a push is
// handed, unread beyond its size limit, to a [Pusher], a webhook to a
// [Webhooker], a shell request's token to a [Sheller], which verify and
// run them. It does not parse etcha's configuration file either; the
// caller fills [Options].
package listen

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultListenAddress   = ":4000"
	DefaultTimeoutPush     = 10 * time.Minute
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultReadHeaderTimeout bounds reading a request's header, and
	// DefaultBodyTimeout reading its body, when Options.ReadTimeout is 0.
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout       = time.Minute
)

// Options configure a Server. The zero value listens on :4000 with a
// self-signed certificate, no rate limit and no push receiver.
type Options struct {
	// ListenAddress is the host:port to listen on (httpServer.listenAddress);
	// "" means ":4000". Port 0 picks a free port; see Server.Addr.
	ListenAddress string
	// TLSCertificatePath and TLSKeyPath name PEM files with the server's
	// certificate (chain) and private key. TLSCertificateBase64 and
	// TLSKeyBase64 hold the same PEM text, base64-encoded. Each of
	// certificate and key comes from its path or its base64 value, never
	// both. With none of the four set, a self-signed certificate is made at
	// start (see Server.Certificate).
	TLSCertificatePath   string
	TLSKeyPath           string
	TLSCertificateBase64 string
	TLSKeyBase64         string
	// Hostname is added to the self-signed certificate's names; ""
	// means os.Hostname().
	Hostname string
	// RateLimitRate (httpServer.rateLimitRate) limits requests per client
	// IP on every endpoint: "<count>/<period>", for example "10/s",
	// "600/m", "5/10s". A client may send count requests at once and then
	// count per period. "" or "0" means no limit. Over the limit: 429.
	RateLimitRate string
	// TimeoutPush (run.timeoutPush) bounds one push from the end of its
	// body until the Pusher returns (the body itself must arrive within a
	// minute); 0 means 10m.
	TimeoutPush time.Duration
	// ShutdownTimeout bounds how long Run waits, once its context is done,
	// for requests in flight; then their contexts are cancelled. 0 means
	// 10s.
	ShutdownTimeout time.Duration
	// TimeoutWebhook (run.timeoutWebhook) bounds one webhook's run; 0
	// means 10m. Over it: 504.
	TimeoutWebhook time.Duration
	// TimeoutShell (run.timeoutShell) bounds one shell session; 0 means
	// 10m.
	TimeoutShell time.Duration
	// ReadTimeout bounds reading a request's header and, separately, its
	// body (not the shell's event stream, which is written, not read); 0
	// means 10s for the header and 1m for the body. A client slower than
	// that is disconnected.
	ReadTimeout time.Duration
	// ShellKeepalive is the interval of the shell stream's keepalive
	// event; 0 or more than 10s means 10s.
	ShellKeepalive time.Duration
	// Pusher receives pushes. nil: the push endpoint answers 404 like
	// any unknown path.
	Pusher Pusher
	// Webhooks runs the requests to WebhookPaths (exact paths, each
	// valid for CheckWebhookPath). nil or no paths: every path that is
	// not another endpoint answers 404.
	Webhooks     Webhooker
	WebhookPaths []string
	// Shells authorizes and starts shell sessions. nil: the shell
	// endpoint answers 404.
	Shells Sheller
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the listen-mode HTTPS server. Make it with New, extend it with
// Handle, serve with Run. Its methods are safe for concurrent use.
type Server struct {
	ln          net.Listener
	srv         *http.Server
	mux         *http.ServeMux
	cert        tls.Certificate
	log         *slog.Logger
	limit       *limiter // nil: no rate limit
	pusher      Pusher
	timeoutPush time.Duration
	grace       time.Duration
	bodyTimeout time.Duration

	webhooks       Webhooker
	webhookPaths   map[string]bool
	timeoutWebhook time.Duration

	shells       Sheller
	timeoutShell time.Duration
	keepalive    time.Duration
	// sessions holds the open shell sessions by ID.
	sessions sync.Map // string → *session

	// hard is the parent of every handler's work context; it is cancelled
	// when the shutdown grace period is over.
	hard     context.Context
	stopHard context.CancelFunc
	// mu guards stopping and the additions to handlers.
	mu sync.Mutex
	// stopping is set when Run waits for the last handler; requests that
	// arrive later are refused.
	stopping bool
	// handlers counts requests in flight, so that Run returns only after
	// the last handler did.
	handlers sync.WaitGroup
}

// New checks opts, loads or makes the certificate and binds the listen
// address. The caller must then call Run, or Close if it will not.
// Errors are one line saying what to change.
func New(opts Options) (*Server, error) {
	s := &Server{
		mux:            http.NewServeMux(),
		log:            opts.Logger,
		pusher:         opts.Pusher,
		timeoutPush:    cmp.Or(max(opts.TimeoutPush, 0), DefaultTimeoutPush),
		grace:          cmp.Or(max(opts.ShutdownTimeout, 0), DefaultShutdownTimeout),
		bodyTimeout:    cmp.Or(max(opts.ReadTimeout, 0), DefaultBodyTimeout),
		webhooks:       opts.Webhooks,
		webhookPaths:   map[string]bool{},
		timeoutWebhook: cmp.Or(max(opts.TimeoutWebhook, 0), DefaultTimeoutWebhook),
		shells:         opts.Shells,
		timeoutShell:   cmp.Or(max(opts.TimeoutShell, 0), DefaultTimeoutShell),
		keepalive:      min(cmp.Or(max(opts.ShellKeepalive, 0), MaxKeepalive), MaxKeepalive),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "listen")
	for _, p := range opts.WebhookPaths {
		if err := CheckWebhookPath(p); err != nil {
			return nil, err
		}
		s.webhookPaths[p] = true
	}
	rate, err := ParseRate(opts.RateLimitRate)
	if err != nil {
		return nil, err
	}
	if rate.Count > 0 {
		s.limit = newLimiter(rate, maxClients)
	}
	if s.cert, err = certificate(opts, s.log); err != nil {
		return nil, err
	}
	// Push and shell check their methods themselves (405), since "/"
	// matches every method and would otherwise turn a wrong method into
	// a webhook 404.
	if s.pusher != nil {
		s.mux.HandleFunc(PushPath+"{source...}", s.push)
	}
	if s.shells != nil {
		s.mux.HandleFunc(ShellPath+"{source...}", s.shell)
	}
	s.mux.HandleFunc("/", s.webhook)
	addr := opts.ListenAddress
	if addr == "" {
		addr = DefaultListenAddress
	}
	if s.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w; set httpServer.listenAddress to a free host:port", addr, err)
	}
	s.hard, s.stopHard = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s.middleware(s.mux),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: cmp.Or(max(opts.ReadTimeout, 0), DefaultReadHeaderTimeout),
		IdleTimeout:       2 * time.Minute,
		// TLS handshake errors from scanners and clients that do not
		// trust the self-signed certificate are noise at Info.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr returns the address the server is bound to, with the port chosen
// when ListenAddress asked for port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Certificate returns the server's certificate: the configured one or the
// self-signed one made by New. Clients can trust it with an
// x509.CertPool holding this certificate.
func (s *Server) Certificate() tls.Certificate { return s.cert }

// Handle registers h for pattern (net/http.ServeMux syntax, for example
// "/hooks/deploy" or "GET /etcha/v1/system/metrics") behind the same rate
// limit and shutdown as the push receiver. It may be called before or
// during Run. A pattern that is malformed or conflicts with one already
// registered is an error (ServeMux would panic).
func (s *Server) Handle(pattern string, h http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			// ServeMux's message spans lines and names source files.
			msg := registeredAt.ReplaceAllString(fmt.Sprint(r), "")
			err = fmt.Errorf("http path %q: %s; change or remove it", pattern, strings.Join(strings.Fields(msg), " "))
		}
	}()
	s.mux.Handle(pattern, h)
	return nil
}

var registeredAt = regexp.MustCompile(` \(registered at [^)]*\)`)

// Run serves until ctx is done, then shuts down: it stops accepting, lets
// requests in flight finish for up to ShutdownTimeout, then cancels their
// contexts and closes their connections, and returns once every handler
// has returned (a Pusher must return once its context is done). It
// returns nil after ctx is done, or the error that stopped serving.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("listening", "addr", s.Addr())
	served := make(chan error, 1)
	go func() { served <- s.srv.ServeTLS(s.ln, "", "") }()
	var err error
	select {
	case err = <-served:
		err = fmt.Errorf("serve https on %s: %w", s.Addr(), err)
		s.stopHard()
		_ = s.srv.Close()
	case <-ctx.Done():
		s.shutdown(context.WithoutCancel(ctx))
		<-served // http.ErrServerClosed, now that Shutdown or Close ran
	}
	_ = s.ln.Close() // already closed by Serve, unless it failed before serving
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.handlers.Wait()
	s.stopHard()
	return err
}

// shutdown stops the server gracefully within the grace period, else
// cancels the handlers' work and closes every connection.
func (s *Server) shutdown(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.grace)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err == nil {
		s.log.Info("stopped")
		return
	}
	s.log.Warn("shutdown grace period over; cancelling requests in flight", "grace", s.grace)
	s.stopHard()
	_ = s.srv.Close()
}

// Close releases the listener of a Server whose Run will not be called.
func (s *Server) Close() error {
	s.stopHard()
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// middleware applies the rate limit, the body size limit and the body
// read deadline to every request and counts the requests in flight for
// Run.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			http.Error(w, "server stopping", http.StatusServiceUnavailable)
			return
		}
		s.handlers.Add(1)
		s.mu.Unlock()
		defer s.handlers.Done()
		// A handler that answers without reading the body (a refusal, an
		// unknown path) leaves net/http reading what is left of it:
		// bound that too. Handlers that run long after reading their
		// body, or stream, lift the deadline.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.bodyTimeout))
		if ok, wait := s.take(r); !ok {
			s.log.Info("rate limited", "remote", r.RemoteAddr, "path", r.URL.Path, "retryAfter", wait)
			// The body is not read: close the connection rather than
			// drain it.
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", retryAfter(wait))
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		// No endpoint takes a body over MaxBodyBytes: refuse a declared
		// one before any handler (webhook, push and shell input also
		// stop a chunked one while reading).
		if r.ContentLength > MaxBodyBytes {
			s.log.Warn("request refused: body too large", "remote", r.RemoteAddr, "path", r.URL.Path, "bytes", r.ContentLength, "max", MaxBodyBytes)
			tooLarge(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// take takes a token for r's client; without a rate limit it always has
// one.
func (s *Server) take(r *http.Request) (bool, time.Duration) {
	if s.limit == nil {
		return true, 0
	}
	return s.limit.take(clientIP(r), time.Now())
}

// clientIP is the rate-limit key: the IP of the TCP peer. Forwarding
// headers are not trusted.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
