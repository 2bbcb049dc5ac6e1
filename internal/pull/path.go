package pull

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kind says where a Path fetches from.
type Kind int

// Path kinds.
const (
	// File is a local file, read whole.
	File Kind = iota
	// HTTP is an http:// or https:// URL, fetched with GET.
	HTTP
	// Etcd is one etcd key, read (and watched) through the caller's client.
	Etcd
)

// DefaultTimeout bounds an HTTP pull whose entry sets no clientTimeout.
const DefaultTimeout = 10 * time.Second

// Path is one parsed pullPaths entry. Create it with Parse.
type Path struct {
	// Kind says which of the fields below apply.
	Kind Kind
	// File is the file's path, as written (a relative path is relative to
	// the working directory). Kind File only.
	File string
	// URL is the URL without its "#…" header part. Kind HTTP only.
	URL string
	// Header holds the headers sent with the GET, without the special
	// ones. Kind HTTP only; nil if there are none.
	Header http.Header
	// SkipVerify is set by the special header skipVerify or
	// clientSkipVerify: the server's TLS certificate is not verified.
	SkipVerify bool
	// Timeout bounds the whole request, body included: clientTimeout:<sec>,
	// else DefaultTimeout. Kind HTTP only.
	Timeout time.Duration
	// Key is the etcd key: everything after "etcd://", so it starts with
	// "/". Kind Etcd only.
	Key string
}

// String returns the entry for logs. The header part of a URL is left out
// (it often carries a bearer token; "#…" marks that there was one), and so
// is a password in the URL.
func (p Path) String() string {
	switch p.Kind {
	case HTTP:
		s := p.URL
		if u, err := url.Parse(p.URL); err == nil {
			s = u.Redacted()
		}
		if len(p.Header) > 0 || p.SkipVerify || p.Timeout != DefaultTimeout {
			s += "#…"
		}
		return s
	case Etcd:
		return "etcd://" + p.Key
	}
	return p.File
}

// Parse parses one pullPaths entry:
//
//   - "etcd:///<key>": the etcd key "/<key>" (three slashes; endpoints come
//     from the ETCD_* environment, not from the entry);
//   - "http://…" or "https://…", optionally followed by "#" and headers
//     "Name:value" separated by CR LF. The special headers skipVerify and
//     clientSkipVerify (the colon is optional; a value, if any, must be
//     "true") disable TLS verification, and clientTimeout:<sec> sets the
//     request timeout in whole seconds (default 10);
//   - anything else without a "scheme://" is a local file path.
//
// Errors are one line saying what is wrong and how to fix it.
func Parse(entry string) (Path, error) {
	if strings.TrimSpace(entry) == "" {
		return Path{}, fmt.Errorf("pullPaths entry is empty; remove it or give a file path, http(s):// URL or etcd:///<key>")
	}
	scheme, rest, ok := strings.Cut(entry, "://")
	if !ok || !isScheme(scheme) {
		return Path{Kind: File, File: entry}, nil
	}
	switch strings.ToLower(scheme) {
	case "etcd":
		return parseEtcd(entry, rest)
	case "http", "https":
		return parseHTTP(entry)
	}
	return Path{}, fmt.Errorf("pullPaths entry %q: unsupported scheme %q; use a file path, http://, https:// or etcd:///<key>", redact(entry), scheme)
}

// redact hides what an entry may carry besides its address, for errors:
// the #headers (credentials, often) and a user:password@ in the URL.
func redact(entry string) string {
	raw, headers, _ := strings.Cut(entry, "#")
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 && at < strings.IndexAny(rest+"/", "/") {
			raw = scheme + "://xxxxx@" + rest[at+1:]
		}
	}
	if headers != "" {
		raw += "#…"
	}
	return raw
}

// isScheme reports whether s is a URL scheme: a letter, then letters,
// digits, "+", "-" or ".".
func isScheme(s string) bool {
	for i, c := range s {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

func parseEtcd(entry, rest string) (Path, error) {
	if !strings.HasPrefix(rest, "/") {
		return Path{}, fmt.Errorf("pullPaths entry %q names an etcd host; write etcd:///<key> with three slashes (the endpoints come from ETCD_ENDPOINTS)", entry)
	}
	if strings.TrimLeft(rest, "/") == "" {
		return Path{}, fmt.Errorf("pullPaths entry %q names no etcd key; write etcd:///<key>, e.g. etcd:///patterns/app", entry)
	}
	return Path{Kind: Etcd, Key: rest}, nil
}

func parseHTTP(entry string) (Path, error) {
	raw, headers, _ := strings.Cut(entry, "#")
	u, err := url.Parse(raw)
	if err != nil {
		return Path{}, fmt.Errorf("pullPaths entry %q is not a valid URL; fix the URL", redact(raw))
	}
	if u.Host == "" {
		return Path{}, fmt.Errorf("pullPaths entry %q has no host; write it as %s://host/path", redact(raw), u.Scheme)
	}
	p := Path{Kind: HTTP, URL: raw, Timeout: DefaultTimeout}
	if headers == "" {
		return p, nil
	}
	for i, h := range strings.Split(headers, "\r\n") {
		if h == "" {
			continue // a trailing CR LF
		}
		if err := p.addHeader(h); err != nil {
			return Path{}, fmt.Errorf("pullPaths entry %s, header %d: %w", redact(raw), i+1, err)
		}
	}
	return p, nil
}

// addHeader applies one "Name:value" header of an HTTP entry.
func (p *Path) addHeader(h string) error {
	name, value, hasColon := strings.Cut(h, ":")
	switch {
	case strings.EqualFold(name, "skipVerify"), strings.EqualFold(name, "clientSkipVerify"):
		if hasColon && value != "" && value != "true" {
			return fmt.Errorf("header %s takes no value, got %q; write %s alone to skip TLS verification, or remove it", name, value, name)
		}
		p.SkipVerify = true
		return nil
	case strings.EqualFold(name, "clientTimeout"):
		sec, err := strconv.Atoi(value)
		if err != nil || sec <= 0 {
			return fmt.Errorf("clientTimeout %q is not a positive whole number of seconds; write e.g. clientTimeout:30", value)
		}
		p.Timeout = time.Duration(sec) * time.Second
		return nil
	}
	if !hasColon {
		return errors.New(`it has no ":"; write headers as Name:value, separated by CR LF`)
	}
	if !isToken(name) {
		return fmt.Errorf("header name %q is not a valid HTTP header name; use letters, digits and -", name)
	}
	if strings.ContainsFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		return fmt.Errorf("header %s has a control character (a bare CR or LF?) in its value; separate headers with CR LF", name)
	}
	if p.Header == nil {
		p.Header = http.Header{}
	}
	p.Header.Add(name, strings.TrimSpace(value))
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2).
func isToken(s string) bool {
	for _, c := range s {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)
		if !ok {
			return false
		}
	}
	return s != ""
}

// ParseAll parses a source's pullPaths in order. The error of the first bad
// entry is prefixed with its index, e.g. "pullPaths[1]: …".
func ParseAll(entries []string) ([]Path, error) {
	paths := make([]Path, len(entries))
	for i, e := range entries {
		p, err := Parse(e)
		if err != nil {
			return nil, fmt.Errorf("pullPaths[%d]: %w", i, err)
		}
		paths[i] = p
	}
	return paths, nil
}
