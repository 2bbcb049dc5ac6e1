// Package pull fetches signed pattern JWTs for etcha's listen mode from the
// places a source's pullPaths name: a local file, an http(s) URL (with
// headers and TLS options in the entry), or an etcd key, which it can also
// watch so that a new value arrives at once.
//
// It deliberately does not verify, compare, store or run what it fetches:
// it hands the text to the caller (internal/source decides). It does not
// create or configure the etcd client: the caller passes a ready
// *clientv3.Client and owns it. It does not retry failed file or HTTP pulls;
// the caller pulls again on its next runFrequency tick.
package pull

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxSize is the largest JWT a Fetcher accepts when Options.MaxSize
// is zero.
const DefaultMaxSize = 4 << 20

// Options configure a Fetcher. The zero value fetches files and http(s)
// URLs with TLS verification and refuses etcd paths.
type Options struct {
	// MaxSize is the largest JWT accepted, in bytes; a larger file, body or
	// etcd value is an error. Zero means DefaultMaxSize.
	MaxSize int64
	// TLSSkipVerify disables TLS certificate verification for every https
	// pull (httpClient.tlsSkipVerify), as the skipVerify header does for
	// one entry. The JWT's signature is still verified by the caller.
	TLSSkipVerify bool
	// Etcd is the client for etcd:/// paths; nil makes them fail with an
	// error saying etcd is not configured. The Fetcher never closes it.
	Etcd *clientv3.Client
	// EtcdTimeout bounds each etcd read; zero means 10s.
	EtcdTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between a watch's retries
	// after etcd errors; zero means internal/watch's defaults (100ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// ProgressInterval is passed to internal/watch: if non-zero, a watch
	// that hears nothing from etcd for 2–3 intervals resyncs. Zero disables.
	ProgressInterval time.Duration
	// Logger receives the watches' warnings about etcd errors and resyncs;
	// nil discards them.
	Logger *slog.Logger
}

// Fetcher fetches JWTs. Its methods are safe for concurrent use.
type Fetcher struct {
	opts     Options
	verify   *http.Client // https with certificate verification
	noVerify *http.Client // https without
}

// New returns a Fetcher for opts, with zero values replaced by defaults.
func New(opts Options) *Fetcher {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.EtcdTimeout <= 0 {
		opts.EtcdTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fetcher{opts: opts, verify: httpClient(opts.TLSSkipVerify), noVerify: httpClient(true)}
}

// httpClient returns a client for pulls. Pulls are minutes apart, so it
// keeps no idle connections (and no goroutines) between them.
func httpClient(skipVerify bool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	if skipVerify {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by skipVerify or httpClient.tlsSkipVerify; the JWT is still verified
	}
	return &http.Client{Transport: t, CheckRedirect: sameOrigin}
}

// sameOrigin follows a redirect only to the same scheme and host: the
// client would send a pull path's #headers (often credentials) on to
// wherever the redirect points.
func sameOrigin(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case len(via) >= 10:
		return errors.New("stopped after 10 redirects")
	case req.URL.Scheme != first.Scheme || req.URL.Host != first.Host:
		return fmt.Errorf("redirected from %s://%s to %s://%s, which would receive the pull path's headers; pull from the final address instead",
			first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// Fetch returns the text stored at p, unchanged (surrounding white space
// included; token verification ignores it). It fails if the file, body or
// value is larger than Options.MaxSize, if an HTTP answer is not 2xx, if
// the etcd key does not exist, or if p is an etcd path and Options.Etcd is
// nil.
func (f *Fetcher) Fetch(ctx context.Context, p Path) (string, error) {
	switch p.Kind {
	case HTTP:
		return f.fetchHTTP(ctx, p)
	case Etcd:
		return f.fetchEtcd(ctx, p)
	}
	return f.fetchFile(p)
}

func (f *Fetcher) fetchFile(p Path) (string, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	file, err := os.OpenFile(p.File, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p.File, err)
	}
	defer file.Close()
	if fi, err := file.Stat(); err != nil {
		return "", fmt.Errorf("read %s: %w", p.File, err)
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("read %s: it is not a regular file (%s); point the pull path at the JWT file", p.File, fi.Mode().Type())
	}
	b, err := f.readLimited(file)
	switch {
	case errors.Is(err, errTooLarge):
		return "", f.tooLarge(p.File)
	case err != nil:
		return "", fmt.Errorf("read %s: %w", p.File, err)
	}
	return string(b), nil
}

// errTooLarge is readLimited's error for content over MaxSize.
var errTooLarge = errors.New("too large")

// readLimited reads r whole, or fails with errTooLarge as soon as it has
// read more than MaxSize bytes.
func (f *Fetcher) readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, f.opts.MaxSize+1))
	if err == nil && int64(len(b)) > f.opts.MaxSize {
		err = errTooLarge
	}
	return b, err
}

func (f *Fetcher) tooLarge(what string) error {
	return fmt.Errorf("%s is larger than %d bytes, the limit for a pattern JWT; a signed pattern is far smaller, so check what the path points to", what, f.opts.MaxSize)
}

func (f *Fetcher) fetchHTTP(ctx context.Context, p Path) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	name := p.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", name, err)
	}
	for k, vs := range p.Header {
		req.Header[k] = vs
	}
	client := f.verify
	if p.SkipVerify {
		client = f.noVerify
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", httpError(ctx, name, p.Timeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("GET %s: server answered %s; check the URL and the headers it needs", name, resp.Status)
	}
	if resp.ContentLength > f.opts.MaxSize {
		return "", f.tooLarge("the body of GET " + name)
	}
	b, err := f.readLimited(resp.Body)
	if errors.Is(err, errTooLarge) {
		return "", f.tooLarge("the body of GET " + name)
	}
	if err != nil {
		return "", httpError(ctx, name, p.Timeout, fmt.Errorf("read body: %w", err))
	}
	return string(b), nil
}

// httpError adds a hint to the known failures of a GET.
func httpError(ctx context.Context, name string, timeout time.Duration, err error) error {
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &certErr):
		return fmt.Errorf("GET %s: the server's TLS certificate is not trusted (%v); install its CA, or add #skipVerify to the entry (the JWT's signature is still checked)", name, certErr.Err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("GET %s: no complete answer within %s; check the server, or raise the timeout with #clientTimeout:<sec>", name, timeout)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err // its text repeats the URL
	}
	return fmt.Errorf("GET %s: %w", name, err)
}

func (f *Fetcher) fetchEtcd(ctx context.Context, p Path) (string, error) {
	if f.opts.Etcd == nil {
		return "", fmt.Errorf("pull %s: etcd is not configured; set ETCD_ENDPOINTS (and the other ETCD_* variables) to pull from etcd", p)
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.EtcdTimeout)
	defer cancel()
	resp, err := f.opts.Etcd.Get(ctx, p.Key)
	if err != nil {
		return "", fmt.Errorf("etcd get %s: %w", p.Key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("etcd key %s does not exist; put a signed pattern JWT there", p.Key)
	}
	v := resp.Kvs[0].Value
	if int64(len(v)) > f.opts.MaxSize {
		return "", f.tooLarge("etcd key " + p.Key)
	}
	return string(v), nil
}

// First fetches paths in order and returns the first whose JWT accept
// takes (returns nil for). accept is called at most once per path, from the
// calling goroutine. If none is taken, or paths is empty, it returns a
// *FirstError that lists why each path failed; if ctx ends, it stops and
// the error also matches ctx.Err().
func (f *Fetcher) First(ctx context.Context, paths []Path, accept func(p Path, jwt string) error) (Path, error) {
	fe := &FirstError{}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			fe.add(p, fmt.Errorf("%s: not tried: %w", p, err))
			break
		}
		jwt, err := f.Fetch(ctx, p)
		if err == nil {
			if err = accept(p, jwt); err == nil {
				return p, nil
			}
			err = &refusedError{p, err}
		}
		fe.add(p, err)
	}
	return Path{}, fe
}

// FirstError says why First found no path whose JWT was accepted.
type FirstError struct {
	// Paths are the paths tried, in order; Errs[i] is why Paths[i] failed,
	// and names the path. A JWT that accept refused has an error that
	// Refused reports.
	Paths []Path
	Errs  []error
}

func (e *FirstError) add(p Path, err error) {
	e.Paths = append(e.Paths, p)
	e.Errs = append(e.Errs, err)
}

// Error lists each path with its error on one line.
func (e *FirstError) Error() string {
	if len(e.Paths) == 0 {
		return "no pullPaths to try; add at least one to the source"
	}
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error() // each names its path
	}
	return "no pull path gave an accepted pattern: " + strings.Join(parts, "; ")
}

// Unwrap returns the errors of the paths tried.
func (e *FirstError) Unwrap() []error { return e.Errs }

// refusedError wraps accept's verdict on the JWT fetched from p.
type refusedError struct {
	p   Path
	err error
}

func (e *refusedError) Error() string { return e.p.String() + ": refused: " + e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// Refused reports whether err (from FirstError.Errs) means the JWT was
// fetched but accept refused it, rather than that the fetch failed.
func Refused(err error) bool {
	var r *refusedError
	return errors.As(err, &r)
}
