package etcdenv

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
)

// tlsConfig returns the TLS config, or nil if no TLS variable is set and no
// endpoint demands TLS. Without ETCD_SERVER_CA the system roots verify the
// server.
func tlsConfig(s settings, eps endpoints) (*tls.Config, error) {
	skip, ca, cert, key := s[varInsecureSkipVerify], s[varServerCA], s[varClientCert], s[varClientKey]
	insecure, err := parseBool(skip)
	if err != nil {
		return nil, err
	}
	if !skip.set() && !ca.set() && !cert.set() && !key.set() && eps.secure == "" {
		return nil, nil
	}
	// A TLS setting next to an http:// endpoint would be dropped by the
	// client without a word, sending the password in clear text.
	// ETCD_INSECURE_SKIP_VERIFY=false asks for nothing, so it may stay.
	wants := []setting{ca, cert, key}
	if insecure {
		wants = append(wants, skip)
	}
	for _, v := range wants {
		if v.set() && eps.plain != "" {
			return nil, fmt.Errorf("%s is set but %s uses %s, which would ignore it; switch to https:// or unset %s",
				v.src, varEndpoints, eps.plain, v.name)
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if ca.set() {
		if cfg.RootCAs, err = certPool(ca); err != nil {
			return nil, err
		}
	}
	if cert.set() || key.set() {
		c, err := clientCert(cert, key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// certPool parses the CA certificates in v.
func certPool(v setting) (*x509.CertPool, error) {
	if err := checkPEM(v, varServerCA); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(v.value)) {
		return nil, fmt.Errorf("%s holds no valid PEM certificate; give the CA certificate (-----BEGIN CERTIFICATE-----)", v.src)
	}
	return pool, nil
}

// clientCert loads the client certificate and its key, which must be given
// together.
func clientCert(cert, key setting) (tls.Certificate, error) {
	switch {
	case !key.set():
		return tls.Certificate{}, fmt.Errorf("%s is set but %s is not; set both (or their %s variants) or neither",
			cert.src, varClientKey, fileSuffix)
	case !cert.set():
		return tls.Certificate{}, fmt.Errorf("%s is set but %s is not; set both (or their %s variants) or neither",
			key.src, varClientCert, fileSuffix)
	}
	if err := checkPEM(cert, varClientCert); err != nil {
		return tls.Certificate{}, err
	}
	if err := checkPEM(key, varClientKey); err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair([]byte(cert.value), []byte(key.value))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load client certificate from %s and %s: %w; give a PEM certificate and its matching private key",
			cert.src, key.src, err)
	}
	return c, nil
}

// checkPEM catches the likely mistake of putting a path into NAME instead
// of NAME_FILE. It does not echo the value, which may be a private key.
func checkPEM(v setting, name string) error {
	if strings.Contains(v.value, "-----BEGIN ") {
		return nil
	}
	if v.name == name {
		return fmt.Errorf("%s holds no PEM block; it must hold the PEM text itself (to give a path, set %s%s instead)",
			name, name, fileSuffix)
	}
	return fmt.Errorf("%s holds no PEM block; point it at a PEM file", v.src)
}
