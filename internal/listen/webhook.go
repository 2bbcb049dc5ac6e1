package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"
)

// MaxBodyBytes is the largest request body a webhook or a shell's stdin
// POST may have; a larger one gets 413 before anything runs.
const MaxBodyBytes = 4 << 20

// DefaultTimeoutWebhook bounds a webhook when Options.TimeoutWebhook is 0.
const DefaultTimeoutWebhook = 10 * time.Minute

// Reserved is the path prefix of etcha's own endpoints; webhook paths may
// not start with it.
const Reserved = "/etcha/v1/"

// Webhook is one request to a webhook path.
type Webhook struct {
	Method     string
	Path       string
	RawQuery   string // without "?"
	Header     http.Header
	Body       []byte // at most MaxBodyBytes
	RemoteAddr string
}

// WebhookReply is the answer of the sources to a Webhook.
type WebhookReply struct {
	// Found is true when a source produced a body; false answers 404.
	Found bool
	Body  string
	// ContentType is "" for text/plain.
	ContentType string
}

// Webhooker runs webhooks (spec §4.7).
type Webhooker interface {
	// Webhook runs the sources serving w.Path. ctx ends at
	// run.timeoutWebhook or when the shutdown grace period is over, not
	// when the client disconnects; Webhook must return soon after, with
	// an error wrapping ctx.Err() (the server answers 504 for
	// context.DeadlineExceeded, 500 for any other error).
	Webhook(ctx context.Context, w Webhook) (WebhookReply, error)
}

// CheckWebhookPath returns a one-line error if p cannot be served as an
// exact webhook path: it must start with "/", be clean (no "//", "." or
// ".." segments, which net/http redirects before any handler sees them),
// and not be under Reserved.
func CheckWebhookPath(p string) error {
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && p != "/" {
		clean += "/"
	}
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("webhook path %q does not start with /; write it as /%s", p, p)
	case clean != p:
		return fmt.Errorf("webhook path %q is not clean (requests are redirected to %q); use %q", p, clean, clean)
	case strings.HasPrefix(p, Reserved):
		return fmt.Errorf("webhook path %q is under %s, which etcha serves itself; pick another path", p, Reserved)
	}
	return nil
}

// webhook serves every path no other endpoint matches: an exact webhook
// path runs the Webhooker, anything else is 404.
//
//  1. Unknown path: 404 without reading the body.
//  2. A body over MaxBodyBytes: 413, by Content-Length before reading,
//     else while reading; the body must arrive within bodyReadTimeout.
//  3. Run the sources with a context that ends at TimeoutWebhook or at
//     the end of the shutdown grace period.
//  4. Answer 200 with the body and content type, 404 when no source
//     answered, 504 on timeout.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	if s.webhooks == nil || !s.webhookPaths[r.URL.Path] { // (1)
		http.NotFound(w, r)
		return
	}
	log := s.log.With("path", r.URL.Path, "method", r.Method, "remote", r.RemoteAddr)
	body, ok := s.readBody(w, r, log, "webhook") // (2)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(s.hard, s.timeoutWebhook) // (3)
	defer cancel()
	reply, err := s.webhooks.Webhook(ctx, Webhook{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(),
		Body: body, RemoteAddr: r.RemoteAddr,
	})
	switch { // (4)
	case errors.Is(err, context.DeadlineExceeded):
		log.Error("webhook timed out; its commands were killed", "timeout", s.timeoutWebhook)
		http.Error(w, "webhook timed out", http.StatusGatewayTimeout)
	case err != nil:
		log.Error("webhook failed", "err", err)
		http.Error(w, "webhook failed; see the server's log", http.StatusInternalServerError)
	case !reply.Found:
		log.Info("webhook answered by no source")
		http.NotFound(w, r)
	default:
		ct := reply.ContentType
		if ct == "" {
			ct = "text/plain"
		}
		log.Info("webhook answered", "bytes", len(reply.Body), "contentType", ct)
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = io.WriteString(w, reply.Body)
	}
}

// readBody reads r's body, at most MaxBodyBytes, within bodyReadTimeout.
// On failure it has answered (413, or 400 for a body that did not arrive)
// and logged one line, and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, log interface {
	Warn(string, ...any)
}, what string) ([]byte, bool) {
	if r.ContentLength > MaxBodyBytes {
		log.Warn(what+" refused: body too large", "bytes", r.ContentLength, "max", MaxBodyBytes)
		tooLarge(w)
		return nil, false
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.bodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		// The deadline stays: net/http would otherwise wait for the
		// rest of the body after the answer.
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			log.Warn(what+" refused: body too large", "max", MaxBodyBytes)
			tooLarge(w)
			return nil, false
		}
		log.Warn(what+" refused: reading the body", "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return nil, false
	}
	_ = rc.SetReadDeadline(time.Time{})
	return body, true
}
