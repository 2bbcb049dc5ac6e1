package etcha

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/source"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// Shell request tokens (spec §4.9). Every request of a session carries a
// fresh JWT signed with build.signingKey: audience ShellAudience, subject
// the source name, iat now and exp at most ShellTokenLife later. The
// receiving source accepts it like a pattern JWT (its verify keys and
// jwtRule), and also refuses one that lives longer than ShellTokenLife,
// or whose exp lies further ahead than that (plus shellClockSkew).
const (
	ShellAudience  = "etcha shell"
	ShellTokenLife = 5 * time.Second
	shellClockSkew = 2 * time.Second
	// shellIdle is how long the client waits for any event (keepalives
	// come every 10 s at most) before it gives the session up.
	shellIdle = 35 * time.Second
	// shellChunk is the most stdin one POST carries.
	shellChunk = 32 << 10
)

// shellPattern is the etchaPattern of a shell request token: token.Verify
// wants one, and if the token were ever pushed as a pattern, rendering it
// fails instead of running anything.
var shellPattern = token.Pattern{
	Entrypoint: "/shell.jsonnet",
	Files:      map[string]string{"/shell.jsonnet": "error 'this is an etcha shell request token, not a pattern'"},
}

// shellToken signs a request token for src, valid from now for
// ShellTokenLife.
func (a *App) shellToken(key token.PrivateKey, src string) (string, error) {
	now := a.now().Truncate(time.Second)
	return token.Sign(&token.Claims{
		Audience: []string{ShellAudience}, Subject: src,
		IssuedAt: now, ExpiresAt: now.Add(ShellTokenLife), Pattern: shellPattern,
	}, key)
}

// Authorize is the listener's check of a shell request token (spec §4.9):
// the source must be configured with shell.command, and tok must verify
// with the source's keys and rule, name the source and ShellAudience, and
// expire within ShellTokenLife of its iat and of now. It returns the ID
// of the verifying key.
func (r *runner) Authorize(name, tok string) (string, error) {
	src := r.a.config().Sources[name]
	if src == nil || src.Shell == nil || src.Shell.Command == "" {
		return "", fmt.Errorf("source %q has no shell; set sources.%s.shell.command to allow etcha shell", name, name)
	}
	c := r.a.config()
	keys, err := c.verifyKeys(src)
	if err != nil {
		return "", err
	}
	claims, key, err := token.Verify(tok, token.VerifyOptions{
		Keys: keys, JWTRule: firstNonEmpty(src.JWTRule, c.Run.JWTRule), Now: r.a.Now, MaxSize: 64 << 10,
	})
	reason := string(token.ReasonOf(err))
	if err == nil {
		reason, err = checkShellClaims(claims, name, r.a.now())
	}
	if err != nil {
		r.metrics.Refused(name, reason)
		return "", fmt.Errorf("shell request token refused (%s): %w", reason, err)
	}
	return key.ID, nil
}

// checkShellClaims checks what token.Verify does not: the audience, the
// subject and the short life. It returns a reason for the metrics.
func checkShellClaims(c *token.Claims, name string, now time.Time) (string, error) {
	switch {
	case !slices.Contains(c.Audience, ShellAudience) || c.Subject != name:
		return "shell_audience", fmt.Errorf("token is not a shell request for source %q (aud %q, sub %q)", name, c.Audience, c.Subject)
	case c.IssuedAt.IsZero() || c.ExpiresAt.IsZero():
		return "shell_lifetime", errors.New("token has no iat or exp; shell requests need both, at most 5s apart")
	case c.ExpiresAt.Sub(c.IssuedAt) > ShellTokenLife || c.ExpiresAt.After(now.Add(ShellTokenLife+shellClockSkew)):
		return "shell_lifetime", fmt.Errorf("token lives too long (iat %s, exp %s); shell requests expire within 5s", c.IssuedAt.UTC().Format(time.RFC3339), c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return "", nil
}

// Start starts an authorized session's shell (spec §4.9): the source's
// shell exec over the main and source execs (their user, group, env and
// workDir; the shell's own command), in its own process group, killed
// when ctx ends. It fires the shell event and keeps etcha_sources_shells
// at 1 until Wait returns.
func (r *runner) Start(ctx context.Context, s listen.Session) (*listen.Process, error) {
	src := r.a.config().Sources[s.Source]
	if src == nil || src.Shell == nil {
		return nil, fmt.Errorf("source %q has no shell", s.Source)
	}
	e, err := r.a.mergeExec(s.Source, src, "sources."+s.Source+".shell", src.Shell)
	if err != nil {
		return nil, err
	}
	e.Command = src.Shell.Command // the chain decides how, not what
	sh, err := command.StartShell(ctx, e, map[string]string{"ETCHA_SOURCE_NAME": s.Source}, r.a.Env)
	if err != nil {
		return nil, err
	}
	r.metrics.Shell(s.Source, s.PublicKey, s.RemoteAddr, true)
	r.engine.Fire(source.Event{Name: "shell", Source: s.Source, PublicKey: s.PublicKey, RemoteAddr: s.RemoteAddr})
	return &listen.Process{Stdin: sh.Stdin, Stdout: sh.Stdout, Stderr: sh.Stderr, Wait: func() (int, error) {
		defer r.metrics.Shell(s.Source, s.PublicKey, s.RemoteAddr, false)
		return sh.Wait()
	}}, nil
}

// ShellOptions are the arguments of `etcha shell`.
type ShellOptions struct {
	// Source is the source whose shell is opened.
	Source string
	// Target is a configured target's name, or else a host[:port]
	// (https, port 4000).
	Target string
	// Stdin is relayed to the shell; nil sends EOF at once.
	Stdin io.Reader
	// Stderr receives the shell's stderr; nil discards it. Its stdout
	// goes to App.Stdout.
	Stderr io.Writer
}

// Shell is `etcha shell <source> <target|host>` (spec §4.9): it opens the
// source's shell on the target, prints its stdout and stderr, sends Stdin
// in POSTs (each read a POST, EOF closes the shell's stdin), each request
// with a fresh token signed by build.signingKey, and returns once the
// shell exited: nil for exit code 0, an *Error with the shell's code
// otherwise (1 if it was killed). The Stdin relay may still be blocked in
// a read when Shell returns (a terminal read cannot be interrupted); it
// ends at its next read.
func (a *App) Shell(ctx context.Context, o ShellOptions) error {
	u, skip, err := a.shellURL(o.Source, o.Target)
	if err != nil {
		return err
	}
	key, err := a.signingKey()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if skip {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by tlsSkipVerify; the requests are signed
	}
	defer tr.CloseIdleConnections()
	sc := &shellClient{a: a, url: u, source: o.Source, key: key, client: &http.Client{Transport: tr}}
	resp, err := sc.request(ctx, http.MethodGet, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	idle := time.AfterFunc(shellIdle, cancel)
	defer idle.Stop()
	return sc.read(ctx, resp.Body, idle, o)
}

// shellClient is one `etcha shell` session.
type shellClient struct {
	a      *App
	url    string
	source string
	key    token.PrivateKey
	client *http.Client
}

// request sends one signed request; query is appended to the URL.
func (c *shellClient) request(ctx context.Context, method, query string, body io.Reader) (*http.Response, error) {
	tok, err := c.a.shellToken(c.key, c.source)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+query, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.client.Do(req)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return nil, fmt.Errorf("%s %s: the target's TLS certificate is not trusted; give it a certificate your system trusts, or set httpClient.tlsSkipVerify or targets.<name>.tlsSkipVerify (the requests are signed either way)", method, c.url)
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.url, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("shell refused by %s: the source does not exist, has no shell.command, or refused the request token (see the target's log)", c.url)
	case resp.StatusCode >= 300:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s: %s", method, c.url, resp.Status, oneLine(string(b)))
	}
	return resp, nil
}

// read handles the event stream until the exit event.
func (c *shellClient) read(ctx context.Context, body io.Reader, idle *time.Timer, o ShellOptions) error {
	stderr := o.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var name string
	for sc.Scan() {
		idle.Reset(shellIdle)
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			name = n
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		switch name {
		case "session":
			go c.relay(ctx, data, o.Stdin) // see Shell's doc
		case "stdout", "stderr":
			b, err := base64.StdEncoding.DecodeString(data)
			if err != nil {
				return fmt.Errorf("shell: %s event is not base64: %w", name, err)
			}
			w := c.a.stdout()
			if name == "stderr" {
				w = stderr
			}
			_, _ = w.Write(b)
		case "error":
			fmt.Fprintln(stderr, "etcha shell: "+data)
		case "exit":
			code, err := strconv.Atoi(data)
			switch {
			case err != nil:
				return fmt.Errorf("shell: exit event %q is not a number", data)
			case code == 0:
				return nil
			case code < 0:
				return &Error{Code: 1, Err: errors.New("the remote shell was killed")}
			}
			return &Error{Code: code}
		}
	}
	if ctx.Err() != nil && sc.Err() != nil {
		return fmt.Errorf("shell: no event from %s within %s; the session is lost", c.url, shellIdle)
	}
	return fmt.Errorf("shell: the stream from %s ended without an exit event (%v)", c.url, sc.Err())
}

// relay posts stdin to the session, a read at a time, then EOF.
func (c *shellClient) relay(ctx context.Context, session string, stdin io.Reader) {
	q := "?session=" + url.QueryEscape(session)
	post := func(extra string, b []byte) bool {
		resp, err := c.request(ctx, http.MethodPost, q+extra, strings.NewReader(string(b)))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}
	if stdin == nil {
		post("&eof=true", nil)
		return
	}
	buf := make([]byte, shellChunk)
	for {
		n, err := stdin.Read(buf)
		if n > 0 && !post("", buf[:n]) {
			return
		}
		if err != nil {
			post("&eof=true", nil)
			return
		}
	}
}

// shellURL returns the shell URL of source on target (a configured target,
// else a host[:port]) and whether to skip TLS verification.
func (a *App) shellURL(src, target string) (string, bool, error) {
	c := a.config()
	skip := c.HTTPClient.TLSSkipVerify
	if t := c.Targets[target]; t != nil {
		scheme := "https"
		if t.Insecure {
			scheme = "http"
		}
		host := firstNonEmpty(t.Hostname, target) + c.Build.PushDomainSuffix
		path := strings.TrimSuffix(firstNonEmpty(t.PathShell, "/etcha/v1/shell"), "/") + "/" + url.PathEscape(src)
		return scheme + "://" + net.JoinHostPort(host, firstNonEmpty(string(t.Port), "4000")) + path, skip || t.TLSSkipVerify, nil
	}
	if target == "" {
		return "", false, Usagef("shell needs a target name or a host")
	}
	host := target
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "4000")
	}
	return "https://" + host + listen.ShellPath + url.PathEscape(src), skip, nil
}
