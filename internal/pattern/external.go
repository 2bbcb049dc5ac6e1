package pattern

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// Limits for what a native function may pull into a render.
const (
	maxFetch       = 64 << 20
	defaultTimeout = 10 * time.Second
)

// defaultExec runs getCmd when Options.Exec is nil.
var defaultExec = command.Exec{Command: "/bin/sh -c"}

// runCmd runs script for getCmd and returns its trimmed stdout. Without
// an Options.Cmd hook it runs through command.Capture, so it runs exactly
// as the pattern's commands would under the same exec: user, group, sudo,
// workDir and process group included (spec §11.14).
func (r *renderer) runCmd(script string) (any, error) {
	var out string
	var err error
	if r.opts.Cmd != nil {
		out, err = r.opts.Cmd(r.ctx, script)
	} else {
		e := defaultExec
		if r.opts.Exec != nil {
			e = *r.opts.Exec
		}
		// Options.Env already holds the inherited variables when
		// envInherit is set, so nothing more is inherited here.
		out, err = command.Capture(r.ctx, e, script, r.opts.Env, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("getCmd %q: %w", script, err)
	}
	return strings.TrimSpace(out), nil
}

// fetch reads a local path (with ~ expanded) or an http(s) URL for getFile.
func (r *renderer) fetch(p string) (any, error) {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		return r.fetchURL(p)
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("getFile %s: %w", p, err)
		}
		p = filepath.Join(home, p[1:])
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("getFile: %w", err)
	}
	return string(data), nil
}

// fetchURL GETs u. Headers follow '#' as name:value pairs separated by
// "\r\n"; clientSkipVerify (or skipVerify) disables TLS verification and
// clientTimeout:<seconds> replaces the 10 s timeout.
func (r *renderer) fetchURL(u string) (any, error) {
	target, fragment, _ := strings.Cut(u, "#")
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("getFile %s: %w", target, err)
	}
	timeout, skipVerify, err := applyHeaders(req, fragment)
	if err != nil {
		return nil, fmt.Errorf("getFile %s: %w", target, err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if skipVerify {
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // requested by the pattern
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: timeout}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("getFile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("getFile %s: HTTP status %s", target, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch+1))
	if err != nil {
		return nil, fmt.Errorf("getFile %s: %w", target, err)
	}
	if len(data) > maxFetch {
		return nil, fmt.Errorf("getFile %s: response larger than %d bytes", target, maxFetch)
	}
	return string(data), nil
}

func applyHeaders(req *http.Request, fragment string) (time.Duration, bool, error) {
	timeout, skipVerify := defaultTimeout, false
	for _, line := range strings.Split(fragment, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch name {
		case "clientSkipVerify", "skipVerify":
			skipVerify = true
		case "clientTimeout":
			sec, err := strconv.ParseFloat(value, 64)
			if err != nil || sec <= 0 {
				return 0, false, fmt.Errorf("clientTimeout %q: use a number of seconds", value)
			}
			timeout = time.Duration(sec * float64(time.Second))
		default:
			req.Header.Add(name, value)
		}
	}
	return timeout, skipVerify, nil
}

func validRecordType(t string) bool {
	switch t {
	case "a", "aaaa", "cname", "txt":
		return true
	}
	return false
}

// lookup resolves a DNS record for getRecord and returns a sorted list.
func (r *renderer) lookup(typ, name string) (any, error) {
	res := r.opts.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(r.ctx, defaultTimeout)
	defer cancel()
	var (
		vals []string
		err  error
	)
	switch typ {
	case "a", "aaaa":
		network := map[string]string{"a": "ip4", "aaaa": "ip6"}[typ]
		var ips []net.IP
		ips, err = res.LookupIP(ctx, network, name)
		for _, ip := range ips {
			vals = append(vals, ip.String())
		}
	case "cname":
		var c string
		c, err = res.LookupCNAME(ctx, name)
		vals = []string{c}
	case "txt":
		vals, err = res.LookupTXT(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("getRecord %s %s: %w", strings.ToUpper(typ), name, err)
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("getRecord %s %s: %w", strings.ToUpper(typ), name, errors.New("no records"))
	}
	sort.Strings(vals)
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out, nil
}
