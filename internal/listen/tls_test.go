package listen_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/listen"
)

func TestSelfSignedCertificate(t *testing.T) {
	s := start(t, listen.Options{Hostname: "node7.example"})
	leaf := s.Certificate().Leaf
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "node7.example"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("self-signed certificate is not valid for %s: %v", name, err)
		}
	}
	if d := time.Until(leaf.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("self-signed certificate valid until %v, want about a year from now", leaf.NotAfter)
	}
	// A client trusting only this certificate connects, by name and by IP.
	for _, host := range []string{"localhost", "127.0.0.1"} {
		_, port, _ := net.SplitHostPort(s.Addr())
		resp, err := s.client.Get("https://" + net.JoinHostPort(host, port) + "/")
		if err != nil {
			t.Errorf("GET via %s: %v", host, err)
			continue
		}
		resp.Body.Close()
		if got := fingerprintOf(resp.TLS.PeerCertificates[0]); got != fingerprintOf(leaf) {
			t.Errorf("served certificate %s, want %s", got, fingerprintOf(leaf))
		}
	}
	if !s.logs.contains("self-signed", "sha256="+fingerprintOf(leaf)) {
		t.Errorf("log has no fingerprint %s:\n%s", fingerprintOf(leaf), s.logs)
	}
	// Each start makes a new certificate.
	other := start(t, listen.Options{Hostname: "node7.example"})
	if fingerprintOf(other.Certificate().Leaf) == fingerprintOf(leaf) {
		t.Error("two servers made the same self-signed certificate")
	}
}

func TestConfiguredCertificate(t *testing.T) {
	certPEM, keyPEM := testCertificate(t, "configured.test")
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	// `base64` wraps its output at 76 columns.
	wrapped := func(b []byte) string {
		s := b64(b)
		var out strings.Builder
		for len(s) > 76 {
			out.WriteString(s[:76] + "\n")
			s = s[76:]
		}
		return out.String() + s + "\n"
	}
	for _, tc := range []struct {
		name string
		opts listen.Options
	}{
		{"files", listen.Options{TLSCertificatePath: certPath, TLSKeyPath: keyPath}},
		{"base64", listen.Options{TLSCertificateBase64: b64(certPEM), TLSKeyBase64: b64(keyPEM)}},
		{"wrapped base64", listen.Options{TLSCertificateBase64: wrapped(certPEM), TLSKeyBase64: wrapped(keyPEM)}},
		{"file and base64", listen.Options{TLSCertificatePath: certPath, TLSKeyBase64: b64(keyPEM)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, tc.opts)
			block, _ := pem.Decode(certPEM)
			want, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AddCert(want)
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "configured.test"}}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: wait}).Get(s.url + "/")
			if err != nil {
				t.Fatalf("GET with the configured certificate trusted: %v", err)
			}
			resp.Body.Close()
			if got := resp.TLS.PeerCertificates[0]; !bytes.Equal(got.Raw, want.Raw) {
				t.Errorf("served %s, want the configured certificate", got.Subject)
			}
			if !s.logs.contains("loaded the TLS certificate", "sha256="+fingerprintOf(want)) {
				t.Errorf("log has no fingerprint of the loaded certificate:\n%s", s.logs)
			}
		})
	}
}

func TestCertificateErrors(t *testing.T) {
	certPEM, keyPEM := testCertificate(t, "a.test")
	_, otherKey := testCertificate(t, "b.test")
	dir := t.TempDir()
	certPath := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name string
		opts listen.Options
		want string
	}{
		{"cert without key", listen.Options{TLSCertificatePath: certPath}, "tlsKeyPath"},
		{"key without cert", listen.Options{TLSKeyBase64: b64(keyPEM)}, "tlsCertificatePath"},
		{"path and base64", listen.Options{TLSCertificatePath: certPath, TLSCertificateBase64: b64(certPEM), TLSKeyBase64: b64(keyPEM)}, "set one"},
		{"missing file", listen.Options{TLSCertificatePath: filepath.Join(dir, "nope.pem"), TLSKeyBase64: b64(keyPEM)}, "tlsCertificatePath"},
		{"not base64", listen.Options{TLSCertificateBase64: "%%%", TLSKeyBase64: b64(keyPEM)}, "tlsCertificateBase64"},
		{"base64 of not PEM", listen.Options{TLSCertificateBase64: b64([]byte("hello")), TLSKeyBase64: b64(keyPEM)}, "PEM"},
		{"key of another certificate", listen.Options{TLSCertificatePath: certPath, TLSKeyBase64: b64(otherKey)}, "PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.ListenAddress = "127.0.0.1:0"
			s, err := listen.New(tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("New error %q: want one line mentioning %q", err, tc.want)
			}
		})
	}
}

// testCertificate makes a self-signed certificate for name and returns it
// and its key as PEM.
func testCertificate(t testing.TB, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func fingerprintOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
