package etcdenv

import (
	"crypto/tls"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ep is a valid ETCD_ENDPOINTS for cases about other variables.
const ep = "http://127.0.0.1:2379"

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t)
	other := newPKI(t)
	pwFile := writeFile(t, dir, "pw", "s3cret\n")
	emptyFile := writeFile(t, dir, "empty", "\n")
	missing := filepath.Join(dir, "missing")
	caPath := writeFile(t, dir, "ca.pem", p.ca)

	tests := []struct {
		name string
		env  map[string]string
		// want are substrings the error must contain.
		want []string
	}{
		{"no endpoints", map[string]string{}, []string{
			"ETCD_ENDPOINTS is not set", "set ETCD_ENDPOINTS to a comma-separated list such as http://127.0.0.1:2379"}},
		{"blank endpoints", map[string]string{"ETCD_ENDPOINTS": "  "}, []string{"ETCD_ENDPOINTS is not set"}},
		{"only a comma", map[string]string{"ETCD_ENDPOINTS": ","}, []string{
			"ETCD_ENDPOINTS holds only commas", "set ETCD_ENDPOINTS to a comma-separated list such as http://127.0.0.1:2379"}},
		{"only commas and spaces", map[string]string{"ETCD_ENDPOINTS": " , ,\t"}, []string{"ETCD_ENDPOINTS holds only commas"}},
		{"only commas in file", map[string]string{"ETCD_ENDPOINTS_FILE": writeFile(t, dir, "commas", ",,\n")}, []string{
			"ETCD_ENDPOINTS_FILE (" + filepath.Join(dir, "commas") + ") holds only commas"}},
		{"bad entry after an empty one", map[string]string{"ETCD_ENDPOINTS": "a:1,,etcd"}, []string{`"etcd" is neither host:port nor a URL`}},
		{"endpoint without port", map[string]string{"ETCD_ENDPOINTS": "etcd"}, []string{`"etcd" is neither host:port nor a URL`}},
		{"url without port", map[string]string{"ETCD_ENDPOINTS": "https://etcd"}, []string{`"https://etcd" has no port`, "https://etcd:2379"}},
		{"url without host", map[string]string{"ETCD_ENDPOINTS": "http://:2379"}, []string{"has no host"}},
		{"url with path", map[string]string{"ETCD_ENDPOINTS": "http://etcd:2379/v3"}, []string{"has a path", "http://etcd:2379"}},
		{"url with user", map[string]string{"ETCD_ENDPOINTS": "a:1,http://u:s3cret@etcd:2379"}, []string{"entry 2 of 2 contains @", "ETCD_USERNAME"}},
		{"bad url with user", map[string]string{"ETCD_ENDPOINTS": "http://u:s3cret@[::1"}, []string{"contains @"}},
		{"unknown scheme", map[string]string{"ETCD_ENDPOINTS": "grpc://etcd:2379"}, []string{"scheme grpc:// is not supported"}},
		{"mixed schemes", map[string]string{"ETCD_ENDPOINTS": "http://a:1,https://b:2"}, []string{
			"ETCD_ENDPOINTS mixes http://a:1 and https://b:2"}},
		{"endpoints from missing file", map[string]string{"ETCD_ENDPOINTS_FILE": missing}, []string{
			"read ETCD_ENDPOINTS_FILE: open " + missing + ": no such file or directory"}},
		{"both set", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_PASSWORD": "x", "ETCD_PASSWORD_FILE": pwFile}, []string{
			"both ETCD_PASSWORD and ETCD_PASSWORD_FILE are set; unset one"}},
		{"unreadable file", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "u", "ETCD_PASSWORD_FILE": missing}, []string{
			"read ETCD_PASSWORD_FILE: open " + missing + ": no such file or directory"}},
		{"file is a directory", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_SERVER_CA_FILE": dir}, []string{
			"read ETCD_SERVER_CA_FILE: read " + dir + ": is a directory"}},
		{"empty file", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "u", "ETCD_PASSWORD_FILE": emptyFile}, []string{
			"ETCD_PASSWORD_FILE (" + emptyFile + ") is empty"}},
		{"user without password", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "u"}, []string{
			"ETCD_USERNAME is set but ETCD_PASSWORD is not"}},
		{"password without user", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_PASSWORD_FILE": pwFile}, []string{
			"ETCD_PASSWORD_FILE (" + pwFile + ") is set but ETCD_USERNAME is not", "or unset ETCD_PASSWORD_FILE"}},
		{"combined with username", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "u:s3cret", "ETCD_USERNAME": "u"}, []string{
			"both ETCD_USERNAME_AND_PASSWORD and ETCD_USERNAME are set"}},
		{"combined with password", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "u:s3cret", "ETCD_PASSWORD": "s3cret"}, []string{
			"both ETCD_USERNAME_AND_PASSWORD and ETCD_PASSWORD are set"}},
		{"combined without colon", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "us3cret"}, []string{
			"ETCD_USERNAME_AND_PASSWORD has no colon; write it as user:password"}},
		{"combined without user", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": ":s3cret"}, []string{"empty user"}},
		{"combined without password", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "u:"}, []string{"empty password"}},
		{"bad bool", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_INSECURE_SKIP_VERIFY": "yes"}, []string{
			`ETCD_INSECURE_SKIP_VERIFY: "yes" is not a boolean; set it to true or false`}},
		{"bad duration", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_AUTO_SYNC_INTERVAL": "5"}, []string{
			`ETCD_AUTO_SYNC_INTERVAL: "5" is not a duration; write it like 5m`}},
		{"negative duration", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_AUTO_SYNC_INTERVAL": "-1m"}, []string{"is negative"}},
		{"CA not PEM", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_SERVER_CA": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}, []string{
			"ETCD_SERVER_CA holds no valid PEM certificate"}},
		{"CA key instead of certificate", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_SERVER_CA": p.clientKey}, []string{
			"ETCD_SERVER_CA holds no valid PEM certificate"}},
		{"CA path in value", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_SERVER_CA": caPath}, []string{
			"ETCD_SERVER_CA holds no PEM block", "set ETCD_SERVER_CA_FILE instead"}},
		{"key path in value", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": "/etc/etcd/key.pem"}, []string{
			"ETCD_CLIENT_KEY holds no PEM block", "set ETCD_CLIENT_KEY_FILE instead"}},
		{"CA file without PEM", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_SERVER_CA_FILE": pwFile}, []string{
			"ETCD_SERVER_CA_FILE (" + pwFile + ") holds no PEM block; point it at a PEM file"}},
		{"cert without key", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CLIENT_CERT": p.clientCert}, []string{
			"ETCD_CLIENT_CERT is set but ETCD_CLIENT_KEY is not; set both"}},
		{"key without cert", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CLIENT_KEY": p.clientKey}, []string{
			"ETCD_CLIENT_KEY is set but ETCD_CLIENT_CERT is not; set both"}},
		{"key of another cert", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": other.clientKey}, []string{
			"load client certificate from ETCD_CLIENT_CERT and ETCD_CLIENT_KEY: tls: private key does not match public key"}},
		{"cert and key swapped", map[string]string{"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CLIENT_CERT": p.clientKey, "ETCD_CLIENT_KEY": p.clientCert}, []string{
			"load client certificate from ETCD_CLIENT_CERT and ETCD_CLIENT_KEY"}},
		{"TLS with http endpoint", map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:2379", "ETCD_SERVER_CA": p.ca}, []string{
			"ETCD_SERVER_CA is set but ETCD_ENDPOINTS uses http://127.0.0.1:2379, which would ignore it"}},
		{"skip verify with http endpoint", map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:2379", "ETCD_INSECURE_SKIP_VERIFY": "true"}, []string{
			"ETCD_INSECURE_SKIP_VERIFY is set but"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(MapLookup(tc.env))
			if err == nil {
				t.Fatalf("Config() = %+v, nil; want an error", cfg)
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Config() error = %q, want it to contain %q", err, w)
				}
			}
			for _, secret := range []string{"s3cret", "PRIVATE KEY"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Config() error = %q, leaks %q", err, secret)
				}
			}
		})
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t)
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, cfg clientv3.Config)
	}{
		{"defaults", map[string]string{"ETCD_ENDPOINTS": ep}, func(t *testing.T, cfg clientv3.Config) {
			if got, want := cfg.AutoSyncInterval, time.Duration(0); got != want {
				t.Errorf("AutoSyncInterval = %v, want %v", got, want)
			}
			if cfg.TLS != nil || cfg.Username != "" || cfg.Password != "" {
				t.Errorf("TLS, Username, Password = %v, %q, %q; want all unset", cfg.TLS, cfg.Username, cfg.Password)
			}
			if cfg.Logger == nil {
				t.Errorf("Logger = nil, want a no-op logger so the client does not build its own")
			}
			if cfg.DialKeepAliveTime <= 0 || cfg.DialKeepAliveTimeout <= 0 {
				t.Errorf("DialKeepAliveTime, DialKeepAliveTimeout = %v, %v; want both set", cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout)
			}
			if cfg.PermitWithoutStream {
				t.Errorf("PermitWithoutStream = true, want false: etcd answers pings on idle connections with GOAWAY too_many_pings")
			}
			if len(cfg.DialOptions) != 1 {
				t.Errorf("DialOptions = %v, want only the reconnect backoff (no blocking dial)", cfg.DialOptions)
			}
		}},
		{"endpoints trimmed", map[string]string{"ETCD_ENDPOINTS": " http://a:1 ,b:2,\t[::1]:3 , unix:///run/etcd.sock"}, wantEndpoints("http://a:1", "b:2", "[::1]:3", "unix:///run/etcd.sock")},
		{"endpoints file with newline", map[string]string{"ETCD_ENDPOINTS_FILE": writeFile(t, dir, "eps", "a:1,b:2\n")}, wantEndpoints("a:1", "b:2")},
		{"empty values are unset", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "", "ETCD_PASSWORD_FILE": "", "ETCD_SERVER_CA": ""}, wantUser("", "")},
		{"user and password", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "u", "ETCD_PASSWORD": "p w "}, wantUser("u", "p w ")},
		{"password file trimmed", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_FILE": writeFile(t, dir, "user", "u\r\n"), "ETCD_PASSWORD_FILE": writeFile(t, dir, "pw", "s3cret\n")}, wantUser("u", "s3cret")},
		{"user in value, password in file", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "u", "ETCD_PASSWORD_FILE": writeFile(t, dir, "pw2", "s3cret\n\n")}, wantUser("u", "s3cret")},
		{"combined splits at first colon", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "u:a:b"}, wantUser("u", "a:b")},
		{"combined from file", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD_FILE": writeFile(t, dir, "up", "u:s3cret\n")}, wantUser("u", "s3cret")},
		{"auto sync set", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_AUTO_SYNC_INTERVAL": "5m"}, func(t *testing.T, cfg clientv3.Config) {
			if got, want := cfg.AutoSyncInterval, 5*time.Minute; got != want {
				t.Errorf("AutoSyncInterval = %v, want %v", got, want)
			}
		}},
		{"auto sync zero", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_AUTO_SYNC_INTERVAL": "0"}, func(t *testing.T, cfg clientv3.Config) {
			if got, want := cfg.AutoSyncInterval, time.Duration(0); got != want {
				t.Errorf("AutoSyncInterval = %v, want %v", got, want)
			}
		}},
		{"https alone sets TLS", map[string]string{"ETCD_ENDPOINTS": "https://a:1"}, wantTLS(false, false, 0)},
		{"unixs alone sets TLS", map[string]string{"ETCD_ENDPOINTS": "unixs:///run/etcd.sock"}, wantTLS(false, false, 0)},
		{"skip verify false sets TLS", map[string]string{"ETCD_ENDPOINTS": "a:1", "ETCD_INSECURE_SKIP_VERIFY": "false"}, wantTLS(false, false, 0)},
		{"skip verify false with http", map[string]string{"ETCD_ENDPOINTS": "http://a:1", "ETCD_INSECURE_SKIP_VERIFY": "0"}, wantTLS(false, false, 0)},
		{"skip verify", map[string]string{"ETCD_ENDPOINTS": "https://a:1", "ETCD_INSECURE_SKIP_VERIFY": "true"}, wantTLS(true, false, 0)},
		{"skip verify from file", map[string]string{"ETCD_ENDPOINTS": "https://a:1", "ETCD_INSECURE_SKIP_VERIFY_FILE": writeFile(t, dir, "skip", "1\n")}, wantTLS(true, false, 0)},
		{"CA without scheme", map[string]string{"ETCD_ENDPOINTS": "a:1", "ETCD_SERVER_CA": p.ca}, wantTLS(false, true, 0)},
		{"CA and client cert from files", map[string]string{
			"ETCD_ENDPOINTS":        "https://a:1",
			"ETCD_SERVER_CA_FILE":   writeFile(t, dir, "ca.pem", p.ca),
			"ETCD_CLIENT_CERT_FILE": writeFile(t, dir, "cert.pem", p.clientCert),
			"ETCD_CLIENT_KEY_FILE":  writeFile(t, dir, "key.pem", p.clientKey),
		}, wantTLS(false, true, 1)},
		{"client cert in values", map[string]string{"ETCD_ENDPOINTS": "https://a:1", "ETCD_CLIENT_CERT": p.clientCert, "ETCD_CLIENT_KEY": p.clientKey}, wantTLS(false, false, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(MapLookup(tc.env))
			if err != nil {
				t.Fatalf("Config() error = %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestLoadDropsEmptyEndpoints(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		env     map[string]string
		want    []string
		warning string // the one warning expected; "" for none
	}{
		{"clean", map[string]string{"ETCD_ENDPOINTS": "a:1,b:2"}, []string{"a:1", "b:2"}, ""},
		{"trailing comma", map[string]string{"ETCD_ENDPOINTS": "a:1,"}, []string{"a:1"},
			"ETCD_ENDPOINTS: ignored the empty entry 2 of 2; remove the extra comma"},
		{"double comma", map[string]string{"ETCD_ENDPOINTS": "a:1,,b:2"}, []string{"a:1", "b:2"},
			"ETCD_ENDPOINTS: ignored the empty entry 2 of 3; remove the extra comma"},
		{"leading, blank and trailing", map[string]string{"ETCD_ENDPOINTS": ",a:1, ,b:2,"}, []string{"a:1", "b:2"},
			"ETCD_ENDPOINTS: ignored the empty entries 1, 3, 5 of 5; remove the extra commas"},
		{"file with a trailing comma", map[string]string{"ETCD_ENDPOINTS_FILE": writeFile(t, dir, "eps", "a:1,\n")}, []string{"a:1"},
			"ETCD_ENDPOINTS_FILE (" + filepath.Join(dir, "eps") + "): ignored the empty entry 2 of 2; remove the extra comma"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Load(MapLookup(tc.env))
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if !slices.Equal(env.Config.Endpoints, tc.want) {
				t.Errorf("Endpoints = %q, want %q", env.Config.Endpoints, tc.want)
			}
			var want []string
			if tc.warning != "" {
				want = []string{tc.warning}
			}
			if !slices.Equal(env.Warnings, want) {
				t.Errorf("Warnings = %q, want %q", env.Warnings, want)
			}
		})
	}
}

func wantEndpoints(want ...string) func(*testing.T, clientv3.Config) {
	return func(t *testing.T, cfg clientv3.Config) {
		if !slices.Equal(cfg.Endpoints, want) {
			t.Errorf("Endpoints = %q, want %q", cfg.Endpoints, want)
		}
	}
}

func wantUser(user, password string) func(*testing.T, clientv3.Config) {
	return func(t *testing.T, cfg clientv3.Config) {
		if cfg.Username != user || cfg.Password != password {
			t.Errorf("Username, Password = %q, %q; want %q, %q", cfg.Username, cfg.Password, user, password)
		}
	}
}

func wantTLS(skipVerify, rootCAs bool, certs int) func(*testing.T, clientv3.Config) {
	return func(t *testing.T, cfg clientv3.Config) {
		if cfg.TLS == nil {
			t.Fatalf("TLS = nil, want a config")
		}
		if got, want := cfg.TLS.MinVersion, uint16(tls.VersionTLS12); got != want {
			t.Errorf("TLS.MinVersion = %v, want %v", got, want)
		}
		if got, want := cfg.TLS.InsecureSkipVerify, skipVerify; got != want {
			t.Errorf("TLS.InsecureSkipVerify = %v, want %v", got, want)
		}
		if got, want := cfg.TLS.RootCAs != nil, rootCAs; got != want {
			t.Errorf("TLS.RootCAs set = %v, want %v", got, want)
		}
		if got, want := len(cfg.TLS.Certificates), certs; got != want {
			t.Errorf("len(TLS.Certificates) = %d, want %d", got, want)
		}
	}
}

func TestMapLookup(t *testing.T) {
	l := MapLookup(map[string]string{"A": "1", "E": ""})
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{{"A", "1", true}, {"E", "", true}, {"B", "", false}} {
		if v, ok := l(tc.name); v != tc.value || ok != tc.ok {
			t.Errorf("lookup(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.value, tc.ok)
		}
	}
}
