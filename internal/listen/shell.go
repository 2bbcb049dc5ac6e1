package listen

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ShellPath is the prefix of the shell endpoint (spec §4.9):
//
//   - GET ShellPath + "<source>" starts the source's shell and streams
//     server-sent events (text/event-stream), each one line of data:
//     "session" (the session ID, first), "stdout" and "stderr" (a chunk of
//     output, standard base64), "keepalive" (random text, at least every
//     10 s), "error" (a one-line message, e.g. the session timed out), and
//     last "exit" (the shell's exit code in decimal, -1 if it was killed).
//   - POST ShellPath + "<source>?session=<id>" writes the body to the
//     shell's stdin; with &eof=true it then closes stdin. 204 on success.
//
// Every request carries "Authorization: Bearer <JWT>", checked by the
// Sheller; a POST's key must be the one that opened the session. Any
// refusal, an unknown source or session, or a source without a shell is
// 404 (logged), so that nothing tells a caller which sources have shells.
const ShellPath = "/etcha/v1/shell/"

// DefaultTimeoutShell bounds a session when Options.TimeoutShell is 0, and
// MaxKeepalive is the longest interval between keepalive events.
const (
	DefaultTimeoutShell = 10 * time.Minute
	MaxKeepalive        = 10 * time.Second
)

// shellWriteTimeout bounds writing one event to the stream: a client that
// stops reading ends its session.
const shellWriteTimeout = 30 * time.Second

// Sheller authorizes and starts shells. It is etcha's side of the shell
// endpoint.
type Sheller interface {
	// Authorize checks the request token tok for source and returns the
	// ID of the key that signed it. Any error refuses the request (404);
	// its text is logged.
	Authorize(source, tok string) (publicKey string, err error)
	// Start starts the shell of an authorized session. When ctx ends
	// (timeoutShell, the client went away, shutdown) the shell's
	// process group must be killed.
	Start(ctx context.Context, s Session) (*Process, error)
}

// Session describes one shell session.
type Session struct {
	ID         string
	Source     string
	PublicKey  string
	RemoteAddr string
}

// Process is a started shell.
type Process struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	Stderr io.Reader
	// Wait is called once, while Stdout and Stderr are read; it returns
	// the exit code once the shell exited and its output streams ended
	// (it must end them itself if a background process holds them).
	Wait func() (int, error)
}

// session is an open shell session.
type session struct {
	Session
	// mu serializes writes to stdin.
	mu    sync.Mutex
	stdin io.WriteCloser
}

// shell serves ShellPath + "{source...}".
func (s *Server) shell(w http.ResponseWriter, r *http.Request) {
	src := r.PathValue("source")
	log := s.log.With("source", src, "remote", r.RemoteAddr, "method", r.Method)
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		s.shellInput(w, r, src)
		return
	default:
		notAllowed(w, http.MethodGet, http.MethodPost)
		return
	}
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
		http.Error(w, "a shell stream request has no body; send stdin in POSTs", http.StatusBadRequest)
		return
	}
	key, ok := s.authorize(w, r, src)
	if !ok {
		return
	}
	// The stream is written, not read: no read deadline (net/http would
	// end the request's context when it passes).
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	// (1) The session lives until the shell exits, timeoutShell, the
	// client goes away or the shutdown grace period is over.
	ctx, cancel := context.WithTimeout(s.hard, s.timeoutShell)
	defer cancel()
	stopOnGone := context.AfterFunc(r.Context(), cancel)
	defer stopOnGone()
	sess := &session{Session: Session{ID: rand.Text(), Source: src, PublicKey: key, RemoteAddr: r.RemoteAddr}}
	p, err := s.shells.Start(ctx, sess.Session)
	if err != nil {
		log.Error("shell not started", "err", err)
		http.Error(w, "shell not started; see the server's log", http.StatusInternalServerError)
		return
	}
	sess.stdin = p.Stdin
	s.sessions.Store(sess.ID, sess)
	defer s.sessions.Delete(sess.ID)
	defer p.Stdin.Close()
	log = log.With("session", sess.ID, "publicKey", key)
	log.Info("shell started")
	code := s.stream(ctx, cancel, w, sess.ID, p)
	log.Info("shell ended", "exit", code, "cause", context.Cause(ctx))
}

// authorize checks the request's bearer token for src and answers 404 if it
// is refused.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, src string) (string, bool) {
	tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var key string
	err := errors.New("no Authorization: Bearer header")
	if found {
		key, err = s.shells.Authorize(src, strings.TrimSpace(tok))
	}
	if err != nil {
		s.log.Warn("shell request refused", "source", src, "remote", r.RemoteAddr, "method", r.Method, "err", err)
		http.NotFound(w, r)
		return "", false
	}
	return key, true
}

// event is one server-sent event.
type event struct{ name, data string }

// stream sends the session's events until the shell's output ends, then
// its exit code, and returns that code.
//
//  1. Send "session" with the ID.
//  2. Copy stdout and stderr as events, and send a keepalive whenever
//     the interval passes.
//  3. Once both reached EOF and the shell exited, send "exit". If the
//     client stopped reading (a write failed or timed out), end the
//     session: ctx is cancelled and the shell killed.
func (s *Server) stream(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter, id string, p *Process) int {
	rc := http.NewResponseController(w)
	failed := false
	send := func(ev event) {
		if failed {
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(shellWriteTimeout))
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
		if err == nil {
			err = rc.Flush()
		}
		failed = err != nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send(event{"session", id}) // (1)

	events := make(chan event)
	var pumps sync.WaitGroup
	pump := func(name string, r io.Reader) {
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				select {
				case events <- event{name, base64.StdEncoding.EncodeToString(buf[:n])}:
				case <-ctx.Done():
					// Keep reading so that the shell is not blocked on a
					// full pipe while it is killed.
				}
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Go(func() { pump("stdout", p.Stdout) })
	pumps.Go(func() { pump("stderr", p.Stderr) })
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }() // ends once both pumps do
	// Wait runs beside the pumps: it ends the streams a background
	// process may hold open after the shell exited.
	var code int
	waited := make(chan struct{})
	go func() { // ends once the shell exited (ctx kills it at the latest)
		defer close(waited)
		var err error
		if code, err = p.Wait(); err != nil {
			code = -1
		}
	}()
	tick := time.NewTicker(s.keepalive)
	defer tick.Stop()
	for done := false; !done; { // (2)
		select {
		case ev := <-events:
			send(ev)
		case <-tick.C:
			send(event{"keepalive", rand.Text()})
		case <-drained:
			done = true
		}
		if failed && ctx.Err() == nil {
			s.log.Warn("shell client stopped reading; ending the session", "session", id)
			cancel()
		}
	}
	<-waited // (3)
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		send(event{"error", "session ended after run.timeoutShell (" + s.timeoutShell.String() + "); its processes were killed"})
	}
	send(event{"exit", strconv.Itoa(code)})
	return code
}

// shellInput serves POST ShellPath + "<source>?session=<id>[&eof=true]".
func (s *Server) shellInput(w http.ResponseWriter, r *http.Request, src string) {
	key, ok := s.authorize(w, r, src)
	if !ok {
		return
	}
	log := s.log.With("source", src, "remote", r.RemoteAddr)
	id := r.URL.Query().Get("session")
	v, found := s.sessions.Load(id)
	if !found || v.(*session).Source != src || v.(*session).PublicKey != key {
		log.Warn("shell input refused: no such session for this source and key", "session", id)
		http.NotFound(w, r)
		return
	}
	sess := v.(*session)
	body, ok := s.readBody(w, r, log, "shell input")
	if !ok {
		return
	}
	eof, _ := strconv.ParseBool(r.URL.Query().Get("eof"))
	sess.mu.Lock()
	defer sess.mu.Unlock()
	var err error
	if len(body) > 0 {
		_, err = sess.stdin.Write(body)
	}
	if eof && err == nil {
		// The shell may have exited on the input just written, and its
		// stdin been closed already: closed is what was asked for.
		if err = sess.stdin.Close(); errors.Is(err, os.ErrClosed) {
			err = nil
		}
	}
	if err != nil {
		log.Info("shell input not written: the shell's stdin is closed", "session", id, "err", err)
		http.Error(w, "the shell's stdin is closed: "+err.Error(), http.StatusGone)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
