package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Key type strings, as written before the first ":" of a key (spec §3.3).
const (
	Ed25519Public  = "ed25519public"
	Ed25519Private = "ed25519private"
	ECP256Public   = "ecp256public"
	ECP256Private  = "ecp256private"
	RSA2048Public  = "rsa2048public"
	RSA2048Private = "rsa2048private"
)

const validTypes = "ed25519public, ed25519private, ecp256public, ecp256private, rsa2048public, rsa2048private"

// PublicKey is a verify key. Type is one of the *Public constants; ID is the
// optional key ID (free text, "" when absent); Key is an ed25519.PublicKey, a
// P-256 *ecdsa.PublicKey or a 2048-bit *rsa.PublicKey matching Type.
type PublicKey struct {
	Type string
	ID   string
	Key  crypto.PublicKey
}

// PrivateKey is a signing key. Type is one of the *Private constants; Key is
// an ed25519.PrivateKey, *ecdsa.PrivateKey (P-256) or *rsa.PrivateKey (2048
// bits) matching Type.
//
// String, GoString and LogValue redact the key material so that a key that
// slips into a log or error shows only its type and ID; use Encode for the
// real text form. MarshalJSON fails for the same reason.
type PrivateKey struct {
	Type string
	ID   string
	Key  crypto.Signer
}

// PublicKeys is a list of verify keys. It decodes from a JSON list of key
// strings, or from a single key string.
type PublicKeys []PublicKey

// keyAlg returns the base name ("ed25519", "ecp256", "rsa2048") and JWS
// signing method of a key type, or ok=false for an unknown type.
func keyAlg(typ string) (base string, method jwt.SigningMethod, ok bool) {
	switch typ {
	case Ed25519Public, Ed25519Private:
		return "ed25519", jwt.SigningMethodEdDSA, true
	case ECP256Public, ECP256Private:
		return "ecp256", jwt.SigningMethodES256, true
	case RSA2048Public, RSA2048Private:
		return "rsa2048", jwt.SigningMethodRS256, true
	}
	return "", nil, false
}

// Alg returns the JWS alg this key verifies: EdDSA, ES256 or RS256, or ""
// for an unknown type.
func (k PublicKey) Alg() string {
	if _, m, ok := keyAlg(k.Type); ok {
		return m.Alg()
	}
	return ""
}

// splitKey splits "<type>:<base64>[:<id>]" and decodes the DER. Errors never
// include the key text.
func splitKey(s, kind string) (typ string, der []byte, id string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil, "", fmt.Errorf("empty %s key; write it as <type>:<base64 DER>[:<id>]", kind)
	}
	typ, rest, _ := strings.Cut(s, ":")
	b64, id, _ := strings.Cut(rest, ":")
	if isEncrypted(typ, b64) {
		return "", nil, "", ErrEncryptedKey
	}
	if _, _, ok := keyAlg(typ); !ok {
		return "", nil, "", fmt.Errorf("unknown key type %s; use one of %s, written as <type>:<base64 DER>[:<id>]", quoteType(typ), validTypes)
	}
	if b64 == "" {
		return "", nil, "", fmt.Errorf("%s key %q has no key data; write it as <type>:<base64 DER>[:<id>]", typ, id)
	}
	der, err = base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", nil, "", fmt.Errorf("%s key %q: bad base64 (%v); the key data must be standard base64 DER", typ, id, err)
	}
	return typ, der, id, nil
}

// isEncrypted recognises Rot's PBKDF format "<kdf>:<inputs>@<enc>:...", by
// the "@" in the data field (standard base64 never has one; the free-text
// ID may) or by a KDF name as the type.
func isEncrypted(typ, data string) bool {
	t := strings.ToLower(typ)
	return strings.Contains(data, "@") || strings.HasPrefix(t, "pbkdf") ||
		strings.HasPrefix(t, "argon") || strings.HasPrefix(t, "scrypt")
}

// quoteType quotes an unknown type for an error, unless it looks like key
// material (long or not a short word), which must never be echoed.
func quoteType(typ string) string {
	if len(typ) > 24 {
		return "(not shown)"
	}
	for _, r := range typ {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return "(not shown)"
		}
	}
	return fmt.Sprintf("%q", typ)
}

// ParsePublicKey parses a verify key "<type>:<base64 PKIX DER>[:<id>]". For
// ed25519public the data may also be the raw 32-byte key. The error says
// what is wrong (unknown type, bad base64, wrong algorithm for the type,
// wrong size or curve, a private key given as public) and never includes
// the key text.
func ParsePublicKey(s string) (PublicKey, error) {
	typ, der, id, err := splitKey(s, "public")
	if err != nil {
		return PublicKey{}, err
	}
	if strings.HasSuffix(typ, "private") {
		return PublicKey{}, fmt.Errorf("%s key %q is a private key; verify keys must be the matching %spublic key", typ, id, strings.TrimSuffix(typ, "private"))
	}
	if typ == Ed25519Public && len(der) == ed25519.PublicKeySize {
		return PublicKey{Type: typ, ID: id, Key: ed25519.PublicKey(der)}, nil
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		if _, perr := x509.ParsePKCS8PrivateKey(der); perr == nil {
			return PublicKey{}, fmt.Errorf("%s key %q holds private key data; use the public key of the pair", typ, id)
		}
		// The x509/asn1 error is a long structure dump: not worth showing.
		return PublicKey{}, fmt.Errorf("%s key %q: not a PKIX DER public key", typ, id)
	}
	if err := checkKey(typ, k); err != nil {
		return PublicKey{}, fmt.Errorf("%s key %q: %w", typ, id, err)
	}
	return PublicKey{Type: typ, ID: id, Key: k}, nil
}

// ParsePrivateKey parses a signing key "<type>:<base64 PKCS#8 DER>[:<id>]".
// PBKDF-encrypted keys are refused with an error wrapping ErrEncryptedKey.
// Errors never include the key text.
func ParsePrivateKey(s string) (PrivateKey, error) {
	typ, der, id, err := splitKey(s, "private")
	if err != nil {
		return PrivateKey{}, err
	}
	if strings.HasSuffix(typ, "public") {
		return PrivateKey{}, fmt.Errorf("%s key %q is a public key; signing needs the matching %sprivate key", typ, id, strings.TrimSuffix(typ, "public"))
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// The x509/asn1 error is a long structure dump: not worth showing.
		if _, perr := x509.ParsePKIXPublicKey(der); perr == nil {
			return PrivateKey{}, fmt.Errorf("%s key %q holds public key data; signing needs the privateKey of the pair", typ, id)
		}
		return PrivateKey{}, fmt.Errorf("%s key %q: not a PKCS#8 DER private key", typ, id)
	}
	s2, ok := k.(crypto.Signer)
	if !ok {
		return PrivateKey{}, fmt.Errorf("%s key %q: unsupported private key; generate one with etcha generate-keys", typ, id)
	}
	if err := checkKey(typ, s2.Public()); err != nil {
		return PrivateKey{}, fmt.Errorf("%s key %q: %w", typ, id, err)
	}
	return PrivateKey{Type: typ, ID: id, Key: s2}, nil
}

// checkKey checks that the public half of a key matches the declared type.
func checkKey(typ string, k crypto.PublicKey) error {
	base, _, _ := keyAlg(typ)
	got := describeKey(k)
	switch base {
	case "ed25519":
		if _, ok := k.(ed25519.PublicKey); ok {
			return nil
		}
	case "ecp256":
		if ek, ok := k.(*ecdsa.PublicKey); ok {
			if ek.Curve == elliptic.P256() {
				return nil
			}
		}
	case "rsa2048":
		if rk, ok := k.(*rsa.PublicKey); ok {
			if rk.N.BitLen() == 2048 {
				return nil
			}
			return fmt.Errorf("RSA key has %d bits; only 2048-bit RSA is supported, generate a new pair with etcha generate-keys rsa2048", rk.N.BitLen())
		}
	}
	return fmt.Errorf("key data is %s but the type says %s; fix the type prefix or use a %s key", got, typ, base)
}

// describeKey names the algorithm of a parsed key for error messages.
func describeKey(k crypto.PublicKey) string {
	switch t := k.(type) {
	case ed25519.PublicKey:
		return "an ed25519 key"
	case *ecdsa.PublicKey:
		return "an ECDSA " + t.Curve.Params().Name + " key"
	case *rsa.PublicKey:
		return fmt.Sprintf("an RSA-%d key", t.N.BitLen())
	}
	return fmt.Sprintf("a %T key", k)
}

// String returns the key in Etcha form "<type>:<base64 PKIX DER>[:<id>]".
// A raw 32-byte Ed25519 key is written as PKIX DER.
func (k PublicKey) String() string {
	der, err := x509.MarshalPKIXPublicKey(k.Key)
	if err != nil {
		return k.Type + ":(invalid key)"
	}
	return joinKey(k.Type, der, k.ID)
}

func joinKey(typ string, der []byte, id string) string {
	s := typ + ":" + base64.StdEncoding.EncodeToString(der)
	if id != "" {
		s += ":" + id
	}
	return s
}

// Equal reports whether k and o have the same type, ID and key.
func (k PublicKey) Equal(o PublicKey) bool {
	e, ok := k.Key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Type == o.Type && k.ID == o.ID && e.Equal(o.Key)
}

// MarshalText returns String().
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses a key with ParsePublicKey.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// UnmarshalJSON accepts a JSON list of key strings or one key string.
func (ks *PublicKeys) UnmarshalJSON(b []byte) error {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '"' {
		var one PublicKey
		if err := json.Unmarshal(t, &one); err != nil {
			return err
		}
		*ks = PublicKeys{one}
		return nil
	}
	var list []PublicKey
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*ks = list
	return nil
}

// Encode returns the key in Etcha form "<type>:<base64 PKCS#8 DER>[:<id>]".
// The result is secret.
func (k PrivateKey) Encode() string {
	der, err := x509.MarshalPKCS8PrivateKey(k.Key)
	if err != nil {
		return k.Type + ":(invalid key)"
	}
	return joinKey(k.Type, der, k.ID)
}

// String returns "<type>:REDACTED[:<id>]"; see Encode for the real form.
func (k PrivateKey) String() string {
	s := k.Type + ":REDACTED"
	if k.ID != "" {
		s += ":" + k.ID
	}
	return s
}

// GoString redacts like String.
func (k PrivateKey) GoString() string { return "token.PrivateKey(" + k.String() + ")" }

// LogValue redacts like String.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON fails: private keys are written out only on purpose, with
// Encode.
func (k PrivateKey) MarshalJSON() ([]byte, error) {
	return nil, fmt.Errorf("refusing to encode private key %q as JSON; use Encode", k.ID)
}

// UnmarshalText parses a key with ParsePrivateKey.
func (k *PrivateKey) UnmarshalText(b []byte) error {
	p, err := ParsePrivateKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// Public returns the verify key of the pair, with the same ID.
func (k PrivateKey) Public() PublicKey {
	return PublicKey{Type: strings.TrimSuffix(k.Type, "private") + "public", ID: k.ID, Key: k.Key.Public()}
}

// GenerateKeys returns a new key pair sharing a random 10-character
// alphanumeric ID. typ is "ed25519" (also "" and "sign-verify"), "ecp256" or
// "rsa2048".
func GenerateKeys(typ string) (PrivateKey, PublicKey, error) {
	var (
		signer crypto.Signer
		err    error
		ptype  string
	)
	switch typ {
	case "", "ed25519", "sign-verify":
		ptype = Ed25519Private
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case "ecp256":
		ptype = ECP256Private
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa2048":
		ptype = RSA2048Private
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return PrivateKey{}, PublicKey{}, fmt.Errorf("unknown key type %s; use ed25519, ecp256 or rsa2048", quoteType(typ))
	}
	if err != nil {
		return PrivateKey{}, PublicKey{}, fmt.Errorf("generate %s key: %w", ptype, err)
	}
	priv := PrivateKey{Type: ptype, ID: randomID(10), Key: signer}
	return priv, priv.Public(), nil
}

// randomID returns n random characters from [A-Za-z0-9], unbiased.
func randomID(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		rand.Read(buf) // never fails (crypto/rand, Go ≥ 1.24)
		for _, b := range buf {
			if b < 248 && len(out) < n { // 248 = 4*62: keeps b%62 uniform
				out = append(out, chars[b%62])
			}
		}
	}
	return string(out)
}
