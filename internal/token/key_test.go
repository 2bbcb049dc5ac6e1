package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

// The key pair published in Etcha's cryptography reference.
const (
	docPrivate = "ed25519private:MC4CAQAwBQYDK2VwBCIEIH0r30uYYQVEFJJ7cG5fPLteuGUPb8qBH+vAOjZnnNGJ:lAASVe7woP"
	docPublic  = "ed25519public:MCowBQYDK2VwAyEAwsXVnwaquPnF1J3oqhB1qFrBEAW+2FDkGYv7iqoPVHs=:lAASVe7woP"
)

func docKeys(t testing.TB) (PrivateKey, PublicKey) {
	t.Helper()
	priv, err := ParsePrivateKey(docPrivate)
	if err != nil {
		t.Fatalf("ParsePrivateKey(doc) = %v", err)
	}
	pub, err := ParsePublicKey(docPublic)
	if err != nil {
		t.Fatalf("ParsePublicKey(doc) = %v", err)
	}
	return priv, pub
}

// genKeys generates a new pair of the base type typ.
func genKeys(t testing.TB, typ string) (PrivateKey, PublicKey) {
	t.Helper()
	priv, pub, err := GenerateKeys(typ)
	if err != nil {
		t.Fatalf("GenerateKeys(%q) = %v", typ, err)
	}
	return priv, pub
}

func TestGenerateKeysRoundTrip(t *testing.T) {
	idRE := regexp.MustCompile(`^[A-Za-z0-9]{10}$`)
	for _, typ := range []string{"ed25519", "ecp256", "rsa2048"} {
		t.Run(typ, func(t *testing.T) {
			priv, pub := genKeys(t, typ)
			if got, want := priv.Type, typ+"private"; got != want {
				t.Fatalf("private Type = %q, want %q", got, want)
			}
			if got, want := pub.Type, typ+"public"; got != want {
				t.Fatalf("public Type = %q, want %q", got, want)
			}
			if !idRE.MatchString(priv.ID) || priv.ID != pub.ID {
				t.Fatalf("IDs = %q, %q; want one shared 10-char alphanumeric ID", priv.ID, pub.ID)
			}
			pub2, err := ParsePublicKey(pub.String())
			if err != nil {
				t.Fatalf("ParsePublicKey(String()) = %v", err)
			}
			if !pub2.Equal(pub) {
				t.Fatalf("public key round trip changed the key")
			}
			priv2, err := ParsePrivateKey(priv.Encode())
			if err != nil {
				t.Fatalf("ParsePrivateKey(Encode()) = %v", err)
			}
			if got, want := priv2.Encode(), priv.Encode(); got != want {
				t.Fatalf("private key round trip changed the key")
			}
			if !priv2.Public().Equal(pub) {
				t.Fatalf("Public() of the parsed private key differs from the generated public key")
			}
		})
	}
}

func TestGenerateKeysDefaultAndUnknown(t *testing.T) {
	priv, _ := genKeys(t, "")
	if got, want := priv.Type, Ed25519Private; got != want {
		t.Fatalf("GenerateKeys(\"\").Type = %q, want %q", got, want)
	}
	a, _ := genKeys(t, "ed25519")
	if a.ID == priv.ID {
		t.Fatalf("two generated pairs share ID %q", a.ID)
	}
	if _, _, err := GenerateKeys("dsa"); err == nil || !strings.Contains(err.Error(), "ed25519, ecp256 or rsa2048") {
		t.Fatalf("GenerateKeys(dsa) error = %v, want one listing the valid types", err)
	}
}

func TestDocumentedKeys(t *testing.T) {
	priv, pub := docKeys(t)
	if got, want := pub.String(), docPublic; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got, want := priv.Encode(), docPrivate; got != want {
		t.Fatalf("Encode() differs from the documented key")
	}
	if !priv.Public().Equal(pub) {
		t.Fatalf("documented private key does not match documented public key")
	}
	raw := "ed25519public:" + base64.StdEncoding.EncodeToString(pub.Key.(ed25519.PublicKey)) + ":lAASVe7woP"
	rawPub, err := ParsePublicKey(raw)
	if err != nil {
		t.Fatalf("ParsePublicKey(raw 32 bytes) = %v", err)
	}
	if !rawPub.Equal(pub) {
		t.Fatalf("raw form parsed to a different key")
	}
	if got, want := rawPub.String(), docPublic; got != want {
		t.Fatalf("raw form String() = %q, want PKIX form %q", got, want)
	}
}

func der(t *testing.T, v any, private bool) string {
	t.Helper()
	var b []byte
	var err error
	if private {
		b, err = x509.MarshalPKCS8PrivateKey(v)
	} else {
		b, err = x509.MarshalPKIXPublicKey(v)
	}
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestParseKeyErrors(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPriv, edPub := genKeys(t, "ed25519")
	ecPriv, _ := genKeys(t, "ecp256")
	edPubB64 := der(t, edPub.Key, false)
	for _, tc := range []struct {
		name, key string
		public    bool
		want      string
	}{
		{"unknown type", "ed448public:" + edPubB64, true, `unknown key type "ed448public"; use one of ed25519public`},
		{"no type", strings.TrimPrefix(docPublic, "ed25519public:"), true, "unknown key type (not shown)"},
		{"empty", "  ", true, "empty public key"},
		{"no data", "ed25519public::id", true, "has no key data"},
		{"bad base64", "ed25519public:MCow!!!:id", true, "bad base64"},
		{"rsa labelled ed25519", "ed25519public:" + der(t, &rsa1024.PublicKey, false), true, "key data is an RSA-1024 key but the type says ed25519public"},
		{"ed25519 labelled ecp256", "ecp256public:" + edPubB64, true, "key data is an ed25519 key but the type says ecp256public"},
		{"p384 labelled ecp256", "ecp256public:" + der(t, &p384.PublicKey, false), true, "key data is an ECDSA P-384 key but the type says ecp256public"},
		{"rsa 1024 public", "rsa2048public:" + der(t, &rsa1024.PublicKey, false), true, "RSA key has 1024 bits; only 2048-bit"},
		{"rsa 1024 private", "rsa2048private:" + der(t, rsa1024, true), false, "RSA key has 1024 bits"},
		{"ecdsa labelled ed25519 private", "ed25519private:" + der(t, ecPriv.Key, true), false, "key data is an ECDSA P-256 key but the type says ed25519private"},
		{"private data as public", "ed25519public:" + der(t, edPriv.Key, true), true, "holds private key data"},
		{"private type as public", docPrivate, true, "is a private key; verify keys must be the matching ed25519public key"},
		{"public type as private", docPublic, false, "is a public key; signing needs the matching ed25519private key"},
		{"public data as private", "ed25519private:" + edPubB64, false, `ed25519private key "" holds public key data; signing needs the privateKey`},
		{"garbage private", "ed25519private:AAAAAAAA:id", false, `ed25519private key "id": not a PKCS#8 DER private key`},
		{"garbage public", "ed25519public:AAAAAAAAAAAA:id", true, `ed25519public key "id": not a PKIX DER public key`},
		{"encrypted rot key", "pbkdf2sha512:100000:c2FsdA==@aes128gcm:Y2lwaGVydGV4dA==:kid", false, "encrypted private keys are not supported; decrypt it first"},
		{"encrypted at sign", "ed25519private:abc@def:kid", false, "encrypted private keys are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.public {
				_, err = ParsePublicKey(tc.key)
			} else {
				_, err = ParsePrivateKey(tc.key)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parse error = %v, want it to contain %q", err, tc.want)
			}
			// No key material in errors: no base64 run of 16+ chars from the input.
			_, data, _ := strings.Cut(tc.key, ":")
			data, _, _ = strings.Cut(data, ":")
			if len(data) >= 16 && strings.Contains(err.Error(), data[:16]) {
				t.Fatalf("error %q echoes key material", err)
			}
			if strings.Contains(err.Error(), "asn1") || len(err.Error()) > 200 {
				t.Fatalf("error %q is an asn1 dump or too long", err)
			}
		})
	}
	if k, err := ParsePublicKey(strings.TrimSuffix(docPublic, "lAASVe7woP") + "ops@example.com"); err != nil || k.ID != "ops@example.com" {
		t.Fatalf("ParsePublicKey(ID with @) = %v, %v; want the key with that ID", k, err)
	}
	if _, err := ParsePrivateKey("pbkdf2:x@y:z"); !errors.Is(err, ErrEncryptedKey) {
		t.Fatalf("encrypted key error = %v, want ErrEncryptedKey", err)
	}
}

func TestPrivateKeyRedaction(t *testing.T) {
	priv, _ := docKeys(t)
	secret := strings.Split(docPrivate, ":")[1]
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", priv)
	outs := map[string]string{
		"String":   priv.String(),
		"%v":       fmt.Sprintf("%v", priv),
		"%+v":      fmt.Sprintf("%+v", priv),
		"%#v":      fmt.Sprintf("%#v", priv),
		"slog":     logged.String(),
		"parseErr": fmt.Sprint(ParsePublicKey(docPrivate)),
	}
	for name, out := range outs {
		if strings.Contains(out, secret) || strings.Contains(out, secret[:20]) {
			t.Fatalf("%s output %q contains the private key", name, out)
		}
	}
	if got, want := priv.String(), "ed25519private:REDACTED:lAASVe7woP"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if b, err := json.Marshal(priv); err == nil {
		t.Fatalf("json.Marshal(private key) = %s, want an error", b)
	}
}

func TestPublicKeysJSON(t *testing.T) {
	_, pub2 := genKeys(t, "ecp256")
	for _, tc := range []struct {
		name, in string
		want     int
	}{
		{"list", fmt.Sprintf("[%q, %q]", docPublic, pub2.String()), 2},
		{"single string", fmt.Sprintf("%q", docPublic), 1},
		{"empty list", "[]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ks PublicKeys
			if err := json.Unmarshal([]byte(tc.in), &ks); err != nil {
				t.Fatalf("Unmarshal = %v", err)
			}
			if got, want := len(ks), tc.want; got != want {
				t.Fatalf("len = %d, want %d", got, want)
			}
			if len(ks) > 0 && ks[0].String() != docPublic {
				t.Fatalf("first key = %q, want %q", ks[0].String(), docPublic)
			}
		})
	}
	var ks PublicKeys
	err := json.Unmarshal([]byte(`["ed25519public:bad!"]`), &ks)
	if err == nil || !strings.Contains(err.Error(), "bad base64") {
		t.Fatalf("Unmarshal(bad key) = %v, want a bad base64 error", err)
	}
}
