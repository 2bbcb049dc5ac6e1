package etcdenv

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// endpoints is the parsed value of ETCD_ENDPOINTS.
type endpoints struct {
	list []string
	// secure is the first endpoint that demands TLS (https://, unixs://)
	// and plain the first that rules it out (http://); "" if none. Entries
	// without a scheme, and unix://, use TLS exactly when a TLS config is
	// set.
	secure, plain string
	// warning says which empty entries were dropped; "" if none.
	warning string
}

// transport says how the etcd client treats an endpoint's scheme.
type transport int

const (
	tlsIfConfigured transport = iota // no scheme, unix:
	tlsRequired                      // https:, unixs:
	tlsNever                         // http:
)

// parseEndpoints splits v at commas and checks every entry. Empty entries
// (a trailing comma, two commas in a row) are dropped with a warning; only a
// value with no entry at all is an error.
//
// Mixing http:// with https:// is an error because the etcd client picks one
// transport for all endpoints from the first one (clientv3
// Client.dialWithBalancer), so half of the list could never work.
func parseEndpoints(v setting) (endpoints, error) {
	if strings.TrimSpace(v.value) == "" {
		return endpoints{}, fmt.Errorf("%s is not set; %s", varEndpoints, endpointsHint)
	}
	parts := strings.Split(v.value, ",")
	var eps endpoints
	var empty []string // positions of empty entries, from 1
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			empty = append(empty, strconv.Itoa(i+1))
			continue
		}
		if strings.Contains(p, "@") && !strings.HasPrefix(p, "unix") {
			// Not echoed: it is likely user:password@host.
			return endpoints{}, fmt.Errorf("%s: entry %d of %d contains @, but the etcd client ignores user info in endpoints; remove it and set %s and %s instead",
				v.src, i+1, len(parts), varUsername, varPassword)
		}
		kind, err := classify(p)
		if err != nil {
			return endpoints{}, fmt.Errorf("%s: %w", v.src, err)
		}
		switch {
		case kind == tlsRequired && eps.secure == "":
			eps.secure = p
		case kind == tlsNever && eps.plain == "":
			eps.plain = p
		}
		eps.list = append(eps.list, p)
	}
	switch {
	case len(eps.list) == 0:
		return endpoints{}, fmt.Errorf("%s holds only commas; %s", v.src, endpointsHint)
	case len(empty) == 1:
		eps.warning = fmt.Sprintf("%s: ignored the empty entry %s of %d; remove the extra comma", v.src, empty[0], len(parts))
	case len(empty) > 1:
		eps.warning = fmt.Sprintf("%s: ignored the empty entries %s of %d; remove the extra commas",
			v.src, strings.Join(empty, ", "), len(parts))
	}
	if eps.secure != "" && eps.plain != "" {
		return endpoints{}, fmt.Errorf("%s mixes %s and %s; the etcd client uses one transport for all endpoints, so give them all the same scheme",
			v.src, eps.plain, eps.secure)
	}
	return eps, nil
}

// classify checks one endpoint and says how its scheme affects TLS. The
// forms are those the etcd client accepts: host:port, http(s)://host:port,
// unix(s)://path and unix(s):path.
func classify(ep string) (transport, error) {
	scheme, rest, ok := strings.Cut(ep, "://")
	if !ok {
		switch {
		case strings.HasPrefix(ep, "unixs:"):
			return tlsRequired, nil
		case strings.HasPrefix(ep, "unix:"):
			return tlsIfConfigured, nil
		}
		if host, port, err := net.SplitHostPort(ep); err != nil || host == "" || port == "" {
			return 0, fmt.Errorf("%q is neither host:port nor a URL; write it like 127.0.0.1:2379 or https://etcd.example.com:2379", ep)
		}
		return tlsIfConfigured, nil
	}
	switch scheme {
	case "http", "https":
		if err := checkHTTPURL(ep); err != nil {
			return 0, err
		}
		if scheme == "https" {
			return tlsRequired, nil
		}
		return tlsNever, nil
	case "unix", "unixs":
		if rest == "" {
			return 0, fmt.Errorf("%q has no socket path; write it like %s:///run/etcd.sock", ep, scheme)
		}
		if scheme == "unixs" {
			return tlsRequired, nil
		}
		return tlsIfConfigured, nil
	}
	return 0, fmt.Errorf("scheme %s:// is not supported; use http://, https://, unix:// or unixs://", scheme)
}

// checkHTTPURL requires an http(s) URL to have a host and a port and no
// path, which the etcd client would silently ignore.
func checkHTTPURL(ep string) error {
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Errorf("%w; write it like https://etcd.example.com:2379", err)
	}
	switch {
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host; write it like %s://127.0.0.1:2379", ep, u.Scheme)
	case u.Port() == "":
		return fmt.Errorf("%q has no port; write it like %s://%s:2379", ep, u.Scheme, u.Host)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return fmt.Errorf("%q has a path, query or fragment, which the etcd client ignores; write it like %s://%s",
			ep, u.Scheme, u.Host)
	}
	return nil
}
