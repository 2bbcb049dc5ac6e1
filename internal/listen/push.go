package listen

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// PushPath is the prefix of the push endpoint: POST PushPath + "<source>".
const PushPath = "/etcha/v1/push/"

// MaxPushBytes is the largest push body accepted; a larger one gets 413.
const MaxPushBytes = MaxBodyBytes

// ErrNotFound is what a Pusher's error wraps when the push must be answered
// 404 (spec §4.8): the source does not exist, does not allowPush, or the
// JWT failed verification for it. The error's text, logged by the server
// and never sent to the client, says which.
var ErrNotFound = errors.New("not found")

// Push is one received push.
type Push struct {
	// Source is the source name from the path (unescaped; it may contain
	// slashes).
	Source string
	// JWT is the request body with surrounding white space removed. It is
	// unverified and may be anything, including empty.
	JWT string
	// Check is true for ?check=true: run in check mode.
	Check bool
	// ParentIDs are the ?parent= values in order (empty ones dropped);
	// nil if none.
	ParentIDs []string
	// RemoteAddr is the client's address (host:port).
	RemoteAddr string
}

// Result is the push Result JSON (spec §4.8, §11.7).
type Result struct {
	// Changed lists the IDs whose change ran, in order, failed ones too
	// (in check mode: whose check failed).
	Changed []string `json:"changed"`
	// Removed lists the IDs whose remove ran, in order, failed ones too.
	Removed []string `json:"removed"`
	// Err is the run's error text; "" (omitted) if none.
	Err string `json:"err,omitempty"`
	// Exit is true iff the exit event fired.
	Exit bool `json:"exit"`
	// Output is the change output of an ad-hoc `etcha push` command;
	// omitted if empty.
	Output string `json:"output,omitempty"`
}

// Pusher verifies and runs pushes. It is the listen engine's side of the
// push receiver.
type Pusher interface {
	// Push handles p and returns its Result. ctx ends at run.timeoutPush
	// or when the server's shutdown grace period is over, not when the
	// client disconnects (a verified push runs to its end); Push must
	// return soon after ctx ends. A run whose commands failed is a Result with Err
	// set and a nil error (HTTP 200). An error wrapping ErrNotFound
	// answers 404; any other error 500 (504 if it wraps
	// context.DeadlineExceeded).
	Push(ctx context.Context, p Push) (Result, error)
}

// PusherFunc adapts a function to Pusher.
type PusherFunc func(ctx context.Context, p Push) (Result, error)

// Push calls f.
func (f PusherFunc) Push(ctx context.Context, p Push) (Result, error) { return f(ctx, p) }

// push serves POST /etcha/v1/push/{source...}.
//
//  1. Refuse a body over MaxPushBytes with 413, by its Content-Length
//     before reading anything, else while reading.
//  2. Parse ?check and ?parent.
//  3. Hand the push to the Pusher, with a context that a client
//     disconnecting does not cancel (a verified push runs to its end) but
//     TimeoutPush and the end of the shutdown grace do.
//  4. Answer 200 with the Result JSON, or 404/500/504.
func (s *Server) push(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		notAllowed(w, http.MethodPost)
		return
	}
	p := Push{Source: r.PathValue("source"), RemoteAddr: r.RemoteAddr}
	if p.Source == "" {
		http.NotFound(w, r)
		return
	}
	log := s.log.With("source", p.Source, "remote", r.RemoteAddr)
	body, ok := s.readBody(w, r, log, "push") // (1)
	if !ok {
		return
	}
	p.JWT = strings.TrimSpace(string(body))
	// (2)
	q := r.URL.Query()
	var err error
	if v := q.Get("check"); v != "" {
		if p.Check, err = strconv.ParseBool(v); err != nil {
			http.Error(w, "check="+strconv.Quote(v)+": want check=true or check=false", http.StatusBadRequest)
			return
		}
	}
	for _, id := range q["parent"] {
		if id != "" {
			p.ParentIDs = append(p.ParentIDs, id)
		}
	}
	// (3)
	ctx, cancel := context.WithTimeout(s.hard, s.timeoutPush)
	defer cancel()
	res, err := s.pusher.Push(ctx, p)
	// (4)
	switch {
	case errors.Is(err, ErrNotFound):
		log.Warn("push refused", "err", err)
		http.NotFound(w, r)
		return
	case errors.Is(err, context.DeadlineExceeded):
		log.Error("push timed out", "timeout", s.timeoutPush, "err", err)
		http.Error(w, "push timed out", http.StatusGatewayTimeout)
		return
	case err != nil:
		log.Error("push failed", "err", err)
		http.Error(w, "push failed; see the server's log", http.StatusInternalServerError)
		return
	}
	if res.Changed == nil {
		res.Changed = []string{}
	}
	if res.Removed == nil {
		res.Removed = []string{}
	}
	b, err := json.Marshal(res)
	if err != nil { // cannot happen for strings and bools
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	log.Info("push answered", "check", p.Check, "parents", p.ParentIDs, "changed", len(res.Changed),
		"removed", len(res.Removed), "err", res.Err)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// tooLarge answers 413 and closes the connection, so the unread rest of
// the body is never read.
func tooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.Error(w, "request body over 4 MiB", http.StatusRequestEntityTooLarge)
}

// notAllowed answers 405 with the allowed methods.
func notAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}
