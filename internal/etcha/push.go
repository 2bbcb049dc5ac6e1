package etcha

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/source"
)

// PushOptions are the arguments of `etcha push` (spec §4.8).
type PushOptions struct {
	// Source is the source name pushed to.
	Source string
	// Payload is a pattern path (ending in .jsonnet) or an ad-hoc
	// command (the remaining arguments joined with spaces); "" uses each
	// target's sourcePatterns entry for Source.
	Payload string
	// Check asks the targets to run in check mode (-c).
	Check bool
	// Host is -h: push to this one host (port 4000 unless it has one,
	// https) instead of the configured targets.
	Host string
	// TargetFilter is -n: a regexp the target names must match.
	TargetFilter string
	// ParentIDs restricts the run to descendants of these group ids (-f).
	ParentIDs []string
}

// pushTarget is one resolved target.
type pushTarget struct {
	name       string
	url        string
	payload    string
	vars       map[string]any
	skipVerify bool
}

// Push builds and signs a pattern (or wraps an ad-hoc command) for every
// selected target, with the push vars, and posts it to the target's push
// endpoint, build.pushMaxWorkers at a time. It prints one block per target,
// in target name order: "<target>:" then "    Changed N: …" / "    Removed
// M: …", "    No changes", the command's output for an ad-hoc command, or
// "    ERROR: …". It returns an exit-1 error if any target failed.
//
// TLS: a target's certificate is verified against the system roots, unless
// httpClient.tlsSkipVerify or targets.<t>.tlsSkipVerify is set (receivers
// with the self-signed certificate `etcha run` makes need one of them; the
// pushed JWT is signed either way).
func (a *App) Push(ctx context.Context, o PushOptions) error {
	targets, err := a.pushTargets(o)
	if err != nil {
		return err
	}
	workers := a.config().Build.PushMaxWorkers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	out := make([]string, len(targets))
	failed := make([]bool, len(targets))
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				out[i], failed[i] = "    ERROR: "+ctx.Err().Error()+"\n", true
				return
			}
			out[i], failed[i] = a.pushTo(ctx, o, t)
		})
	}
	wg.Wait()
	var bad []string
	for i, t := range targets {
		fmt.Fprintf(a.stdout(), "%s:\n%s", t.name, out[i])
		if failed[i] {
			bad = append(bad, t.name)
		}
	}
	if len(bad) > 0 {
		return &Error{Code: 1, Err: fmt.Errorf("push to %d of %d target(s) failed: %s", len(bad), len(targets), strings.Join(bad, ", "))}
	}
	return nil
}

// pushTargets selects the targets (spec §4.8): -h, else every target
// whose sourcePatterns has the source, filtered by -n.
func (a *App) pushTargets(o PushOptions) ([]pushTarget, error) {
	c := a.config()
	skip := c.HTTPClient.TLSSkipVerify
	if o.Host != "" {
		if o.Payload == "" {
			return nil, Usagef("push -h %s needs a pattern path or a command to push", o.Host)
		}
		host := o.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			host = net.JoinHostPort(host, "4000")
		}
		u := "https://" + host + "/etcha/v1/push/" + url.PathEscape(o.Source)
		return []pushTarget{{name: o.Host, url: u, payload: o.Payload, skipVerify: skip}}, nil
	}
	var filter *regexp.Regexp
	if o.TargetFilter != "" {
		re, err := regexp.Compile(o.TargetFilter)
		if err != nil {
			return nil, Usagef("push -n %q: %v; give a regular expression matching target names", o.TargetFilter, err)
		}
		filter = re
	}
	var out []pushTarget
	for _, name := range slices.Sorted(maps.Keys(c.Targets)) {
		t := c.Targets[name]
		if t == nil {
			continue
		}
		p, ok := t.SourcePatterns[o.Source]
		if !ok || filter != nil && !filter.MatchString(name) {
			continue
		}
		if o.Payload != "" {
			p = o.Payload
		}
		scheme := "https"
		if t.Insecure {
			scheme = "http"
		}
		port := string(t.Port)
		if port == "" {
			port = "4000"
		}
		host := firstNonEmpty(t.Hostname, name) + c.Build.PushDomainSuffix
		path := strings.TrimSuffix(firstNonEmpty(t.PathPush, "/etcha/v1/push"), "/") + "/" + url.PathEscape(o.Source)
		out = append(out, pushTarget{
			name: name, url: scheme + "://" + net.JoinHostPort(host, port) + path, payload: p, vars: t.Vars,
			skipVerify: skip || t.TLSSkipVerify,
		})
	}
	if len(out) == 0 {
		return nil, Usagef("no target has sources %q in its sourcePatterns%s; add targets.<name>.sourcePatterns.%s to the config, or push to one host with -h", o.Source, filterNote(o.TargetFilter), o.Source)
	}
	return out, nil
}

func filterNote(f string) string {
	if f == "" {
		return ""
	}
	return " and a name matching -n " + f
}

// pushTo signs the payload for t and posts it. It returns the target's
// output block and whether it failed.
func (a *App) pushTo(ctx context.Context, o PushOptions, t pushTarget) (string, bool) {
	fail := func(err error) (string, bool) { return "    ERROR: " + oneLine(err.Error()) + "\n", true }
	if t.payload == "" {
		return fail(fmt.Errorf("nothing to push: sourcePatterns.%s is empty for this target; give a pattern path or a command", o.Source))
	}
	jwt, err := a.pushJWT(ctx, o.Source, t)
	if err != nil {
		return fail(err)
	}
	res, err := a.post(ctx, o, t, jwt)
	if err != nil {
		return fail(err)
	}
	var b strings.Builder
	if isPatternPath(t.payload) {
		verb := "Changed"
		if o.Check {
			verb = "Would change"
		}
		if len(res.Changed) > 0 {
			fmt.Fprintf(&b, "    %s %d: %s\n", verb, len(res.Changed), strings.Join(res.Changed, ", "))
		}
		if len(res.Removed) > 0 {
			fmt.Fprintf(&b, "    Removed %d: %s\n", len(res.Removed), strings.Join(res.Removed, ", "))
		}
		if len(res.Changed)+len(res.Removed) == 0 && res.Err == "" {
			b.WriteString("    No changes\n")
		}
	} else if res.Output != "" {
		for _, l := range strings.Split(strings.TrimRight(res.Output, "\n"), "\n") {
			b.WriteString("    " + l + "\n")
		}
	} else if res.Err == "" && len(res.Changed) == 0 {
		b.WriteString("    No changes\n")
	}
	if res.Err != "" {
		b.WriteString("    ERROR: " + oneLine(res.Err) + "\n")
		return b.String(), true
	}
	return b.String(), false
}

// pushJWT builds and signs the payload with the push vars (spec §5.3):
// the sender's vars, its sources.<source>.vars if configured, the
// target's vars, then source and target. An ad-hoc command is wrapped as
// {run: [{always: true, change: <command>, id: "etcha push"}]}.
func (a *App) pushJWT(ctx context.Context, srcName string, t pushTarget) (string, error) {
	src := a.config().Sources[srcName]
	if src == nil {
		src = &SourceConfig{}
	}
	r := renderRequest{sourceName: srcName, source: src, targetVars: t.vars, auto: map[string]any{"target": t.name}}
	path := t.payload
	if isPatternPath(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		r.auto["srcDir"], r.auto["srcPath"] = filepath.Dir(abs), abs
	} else {
		b, err := json.Marshal(map[string]any{"run": []map[string]any{{"always": true, "change": path, "id": source.PushCommandID}}})
		if err != nil {
			return "", err
		}
		path = string(b) // JSON is Jsonnet
	}
	jwt, _, err := a.buildJWT(ctx, path, r)
	return jwt, err
}

// post sends jwt to t and decodes the Result.
func (a *App) post(ctx context.Context, o PushOptions, t pushTarget, jwt string) (listen.Result, error) {
	u, err := url.Parse(t.url)
	if err != nil {
		return listen.Result{}, fmt.Errorf("target URL %s: %w; fix the target's hostname, port or pathPush", t.url, err)
	}
	q := u.Query()
	if o.Check {
		q.Set("check", "true")
	}
	for _, id := range o.ParentIDs {
		q.Add("parent", id)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(jwt))
	if err != nil {
		return listen.Result{}, err
	}
	req.Header.Set("Content-Type", "application/jwt")
	resp, err := a.pushClient(t.skipVerify).Do(req)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return listen.Result{}, fmt.Errorf("POST %s: the target's TLS certificate is not trusted; give it a certificate your system trusts, or set httpClient.tlsSkipVerify or targets.<name>.tlsSkipVerify (the JWT is signed either way)", t.url)
		}
		return listen.Result{}, fmt.Errorf("POST %s: %w", t.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, listen.MaxPushBytes+1))
	if err != nil {
		return listen.Result{}, fmt.Errorf("POST %s: read the answer: %w", t.url, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return listen.Result{}, errors.New("push didn't match any sources")
	case resp.StatusCode != http.StatusOK:
		return listen.Result{}, fmt.Errorf("POST %s: %s: %s", t.url, resp.Status, oneLine(string(bytes.TrimSpace(body))))
	}
	var res listen.Result
	if err := json.Unmarshal(body, &res); err != nil {
		return listen.Result{}, fmt.Errorf("POST %s: the answer is not a push Result: %w", t.url, err)
	}
	return res, nil
}

// pushClient returns the client for one push: bounded by run.timeoutPush
// (default 10m) plus a minute, so a hung target cannot hang push.
func (a *App) pushClient(skipVerify bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	if skipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by tlsSkipVerify; the JWT is signed
	}
	timeout := time.Duration(a.config().Run.TimeoutPush)
	if timeout <= 0 {
		timeout = listen.DefaultTimeoutPush
	}
	return &http.Client{Transport: tr, Timeout: timeout + time.Minute}
}

// oneLine joins the lines of s with " / ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " / ")
}
