package listen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// selfSignedValidity is how long a self-signed certificate is valid.
const selfSignedValidity = 365 * 24 * time.Hour

// certificate loads the configured certificate, or makes a self-signed
// one when none is configured, and logs its SHA-256 fingerprint.
func certificate(opts Options, log *slog.Logger) (tls.Certificate, error) {
	certPEM, err := pemFrom("tlsCertificate", opts.TLSCertificatePath, opts.TLSCertificateBase64)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := pemFrom("tlsKey", opts.TLSKeyPath, opts.TLSKeyBase64)
	if err != nil {
		return tls.Certificate{}, err
	}
	var cert tls.Certificate
	switch {
	case certPEM == nil && keyPEM == nil:
		if cert, err = selfSigned(opts.Hostname); err != nil {
			return tls.Certificate{}, fmt.Errorf("make a self-signed certificate: %w", err)
		}
		log.Info("made a self-signed certificate", "names", cert.Leaf.DNSNames, "ips", cert.Leaf.IPAddresses,
			"sha256", fingerprint(cert.Leaf), "notAfter", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		return cert, nil
	case certPEM == nil:
		return tls.Certificate{}, fmt.Errorf("httpServer.tlsKey is set but not httpServer.tlsCertificate; set httpServer.tlsCertificatePath or tlsCertificateBase64 too")
	case keyPEM == nil:
		return tls.Certificate{}, fmt.Errorf("httpServer.tlsCertificate is set but not httpServer.tlsKey; set httpServer.tlsKeyPath or tlsKeyBase64 too")
	}
	if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("httpServer TLS certificate and key: %w; give a PEM certificate and its PEM private key", err)
	}
	log.Info("loaded the TLS certificate", "subject", cert.Leaf.Subject.String(), "sha256", fingerprint(cert.Leaf),
		"notAfter", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return cert, nil
}

// pemFrom reads the PEM text of httpServer.<name>Path or <name>Base64;
// nil if neither is set.
func pemFrom(name, path, b64 string) ([]byte, error) {
	switch {
	case path != "" && b64 != "":
		return nil, fmt.Errorf("httpServer.%sPath and %sBase64 are both set; set one", name, name)
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("httpServer.%sPath: %w", name, err)
		}
		return b, nil
	case b64 != "":
		// Line breaks are allowed, as `base64` wraps its output.
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(b64), ""))
		if err != nil {
			return nil, fmt.Errorf("httpServer.%sBase64: %w; give the PEM text encoded with standard base64", name, err)
		}
		return b, nil
	}
	return nil, nil
}

// selfSigned makes an ECDSA P-256 certificate valid for a year, for
// localhost, 127.0.0.1, ::1 and the host name.
func selfSigned(hostname string) (tls.Certificate, error) {
	if hostname == "" {
		hostname, _ = os.Hostname() // without a host name, the loopback names still work
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	names := []string{"localhost"}
	if hostname != "" && hostname != "localhost" {
		names = append(names, hostname)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[len(names)-1], Organization: []string{"etcha self-signed"}},
		NotBefore:    now.Add(-time.Hour), // some slack for clients whose clock is behind
		NotAfter:     now.Add(selfSignedValidity),
		// IsCA and CertSign let clients that only accept CA roots
		// (curl --cacert) trust the certificate directly.
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// fingerprint is the SHA-256 of the certificate's DER, in hex.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
