// Package etcdenv builds an etcd client configuration from environment
// variables, following the contract of github.com/Jille/etcd-client-from-env:
//
//	ETCD_ENDPOINTS              comma-separated endpoints (required), e.g.
//	                            https://etcd1:2379,https://etcd2:2379 or 10.0.0.1:2379
//	ETCD_USERNAME               user name for etcd authentication
//	ETCD_PASSWORD               its password
//	ETCD_USERNAME_AND_PASSWORD  both as user:password (split at the first colon)
//	ETCD_INSECURE_SKIP_VERIFY   true to skip verifying the server certificate
//	ETCD_SERVER_CA              PEM text of the CA that signed the server certificate
//	ETCD_CLIENT_CERT            PEM text of a client certificate
//	ETCD_CLIENT_KEY             PEM text of its private key
//	ETCD_AUTO_SYNC_INTERVAL     Go duration such as 5m; 0 or unset means never
//
// (ETCD_AUTO_SYNC_INTERVAL is an addition of ours.) Every variable NAME may
// instead be given as NAME_FILE, the path of a file holding the value; the
// trailing line breaks of such a file are dropped for every variable except
// the three PEM ones. An empty variable counts as unset, so `ETCD_USERNAME=` in a
// compose file means "no authentication".
//
// Unlike the original, it checks the combination: a user without a
// password, a certificate without a key, NAME together with NAME_FILE, TLS
// settings with http:// endpoints and the like are errors that name the
// variable and say what to change.
//
// What is harmless is accepted: empty entries in ETCD_ENDPOINTS (a trailing
// comma) are dropped, and Load returns a warning for the caller to log.
//
// It deliberately does not read the process environment itself (callers pass
// os.LookupEnv, tests pass MapLookup), does not create a client and does not
// log. It does not support the etcd v2 API, DNS discovery or ServerName
// overrides.
package etcdenv

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Variable names. Each may also be given with the suffix _FILE.
const (
	varEndpoints           = "ETCD_ENDPOINTS"
	varUsername            = "ETCD_USERNAME"
	varPassword            = "ETCD_PASSWORD"
	varUsernameAndPassword = "ETCD_USERNAME_AND_PASSWORD"
	varInsecureSkipVerify  = "ETCD_INSECURE_SKIP_VERIFY"
	varServerCA            = "ETCD_SERVER_CA"
	varClientCert          = "ETCD_CLIENT_CERT"
	varClientKey           = "ETCD_CLIENT_KEY"
	varAutoSyncInterval    = "ETCD_AUTO_SYNC_INTERVAL"
	fileSuffix             = "_FILE"
	endpointsHint          = "set " + varEndpoints + " to a comma-separated list such as http://127.0.0.1:2379"
)

// Connection settings that are not read from the environment; see Config.
const (
	dialTimeout      = 5 * time.Second
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 5 * time.Second
)

// reconnect paces the client's attempts to reach a member that is down.
// gRPC's default backs off to 120 s, so a client could stay away from an
// etcd that came back for two minutes; capping the delay at 500 ms (±20 %
// jitter) brings it back within 0.6 s, so that files are on disk within a
// second of etcd serving again, at the cost of two connection attempts per
// member a second during an outage.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   500 * time.Millisecond,
	},
	MinConnectTimeout: 5 * time.Second,
}

// Lookup has the signature of os.LookupEnv.
type Lookup func(string) (string, bool)

// MapLookup returns a Lookup that reads from m. Absent keys are unset.
func MapLookup(m map[string]string) Lookup {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// Env is what Load read from the environment.
type Env struct {
	// Config is the etcd client configuration, described at Load.
	Config clientv3.Config
	// Warnings are harmless mistakes that Load worked around, each one line
	// that says what was wrong and how to fix it, for the caller to log.
	Warnings []string
}

// Config is Load without the warnings; a caller that can log should use
// Load and log them.
func Config(lookup Lookup) (clientv3.Config, error) {
	env, err := Load(lookup)
	return env.Config, err
}

// Load reads the variables through lookup and returns a client
// configuration and warnings, or the first problem found as an error that
// names the variable and says how to fix it. No error or warning contains a
// password or a private key.
//
// The configuration has:
//   - Endpoints as given, with spaces around each entry removed and empty
//     entries dropped (with a warning);
//   - Username and Password, if set;
//   - TLS, if any TLS variable is set or an endpoint uses https:// or
//     unixs:// (minimum TLS 1.2, system roots unless ETCD_SERVER_CA);
//   - AutoSyncInterval 0 unless ETCD_AUTO_SYNC_INTERVAL is set: syncing
//     replaces the configured endpoints with the URLs the members advertise,
//     which bypasses proxies, NAT and DNS names that the user chose;
//   - DialTimeout 5 s: it bounds only the authentication round trip that
//     clientv3.New makes when a user is set, so New fails instead of hanging
//     while etcd is down; without a user New never waits for a connection;
//   - DialKeepAliveTime 10 s and DialKeepAliveTimeout 5 s, so a dead member
//     is noticed within about 15 s, and PermitWithoutStream false: etcd
//     servers do not permit pings on a connection without open requests and
//     answer them with GOAWAY "too_many_pings", so keepalive runs only while
//     a request or watch is open, which is when a dead member matters;
//   - DialOptions with a reconnect backoff capped at 500 ms (gRPC's default
//     grows to 120 s), so the client finds an etcd that came back quickly;
//     it does not make the dial blocking;
//   - Logger zap.NewNop(): the etcd client's own zap logging is noise next
//     to the caller's slog output, and every failure that matters reaches
//     the caller as an error from a client call.
//
// The caller may change any field before passing it to clientv3.New.
func Load(lookup Lookup) (Env, error) {
	s, err := readSettings(lookup)
	if err != nil {
		return Env{}, err
	}
	cfg := clientv3.Config{
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		Logger:               zap.NewNop(),
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(reconnect)},
	}
	eps, err := parseEndpoints(s[varEndpoints])
	if err != nil {
		return Env{}, err
	}
	cfg.Endpoints = eps.list
	if cfg.Username, cfg.Password, err = credentials(s); err != nil {
		return Env{}, err
	}
	if cfg.TLS, err = tlsConfig(s, eps); err != nil {
		return Env{}, err
	}
	if cfg.AutoSyncInterval, err = autoSyncInterval(s[varAutoSyncInterval]); err != nil {
		return Env{}, err
	}
	env := Env{Config: cfg}
	if eps.warning != "" {
		env.Warnings = append(env.Warnings, eps.warning)
	}
	return env, nil
}

// credentials returns the user name and password from ETCD_USERNAME and
// ETCD_PASSWORD, or from ETCD_USERNAME_AND_PASSWORD.
func credentials(s settings) (user, password string, err error) {
	u, p, up := s[varUsername], s[varPassword], s[varUsernameAndPassword]
	if up.set() {
		if u.set() || p.set() {
			other := u
			if !u.set() {
				other = p
			}
			return "", "", fmt.Errorf("both %s and %s are set; unset one of them", up.src, other.src)
		}
		user, password, ok := strings.Cut(up.value, ":")
		switch {
		case !ok:
			return "", "", fmt.Errorf("%s has no colon; write it as user:password", up.src)
		case user == "":
			return "", "", fmt.Errorf("%s has an empty user before the colon; write it as user:password", up.src)
		case password == "":
			return "", "", fmt.Errorf("%s has an empty password after the colon; write it as user:password", up.src)
		}
		return user, password, nil
	}
	switch {
	case u.set() && !p.set():
		return "", "", fmt.Errorf("%s is set but %s is not; set %s (or %s%s) too, or unset %s",
			u.src, varPassword, varPassword, varPassword, fileSuffix, u.name)
	case p.set() && !u.set():
		return "", "", fmt.Errorf("%s is set but %s is not; set %s (or %s%s) too, or unset %s",
			p.src, varUsername, varUsername, varUsername, fileSuffix, p.name)
	}
	return u.value, p.value, nil
}

// autoSyncInterval parses ETCD_AUTO_SYNC_INTERVAL; unset means 0 (off).
func autoSyncInterval(v setting) (time.Duration, error) {
	if !v.set() {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(v.value))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration; write it like 5m or 30s, or 0 to never sync", v.src, v.value)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: %q is negative; write it like 5m or 30s, or 0 to never sync", v.src, v.value)
	}
	return d, nil
}

// parseBool parses v with strconv.ParseBool; unset means false.
func parseBool(v setting) (bool, error) {
	if !v.set() {
		return false, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v.value))
	if err != nil {
		return false, fmt.Errorf("%s: %q is not a boolean; set it to true or false", v.src, v.value)
	}
	return b, nil
}
