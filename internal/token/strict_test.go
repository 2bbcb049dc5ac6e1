package token

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// signRaw signs the header and payload JSON texts as given with k, so a
// test can build validly signed tokens that Sign would never produce.
func signRaw(t testing.TB, hdr, payload string, k PrivateKey) string {
	t.Helper()
	input := base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodEdDSA.Sign(input, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestVerifyRefusesAmbiguousTokens is issue 7 item 23 (spec §11.13):
// validly signed tokens with a date outside int64 seconds, a repeated
// claim or header parameter, or a crit header are refused as malformed,
// before any key is tried (so even with no keys configured).
func TestVerifyRefusesAmbiguousTokens(t *testing.T) {
	priv, pub := docKeys(t)
	b, err := json.Marshal(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	payload := string(b)
	hdr := `{"alg":"EdDSA","kid":"` + pub.ID + `","typ":"JWT"}`
	withClaim := func(kv string) string { return "{" + kv + "," + payload[1:] }
	withHeader := func(kv string) string { return "{" + kv + "," + hdr[1:] }
	if _, _, err := Verify(signRaw(t, hdr, payload, priv), opts(pub)); err != nil {
		t.Fatalf("the unmodified raw token is refused: %v", err)
	}
	for _, tc := range []struct {
		name, hdr, payload, msg string
	}{
		{"nbf past int64 wraps to the past", hdr, withClaim(`"nbf":18446744073709551616`),
			"malformed jwt payload: claim nbf: 18446744073709551616 is outside the range of unix seconds; build and sign the token again with a real date"},
		{"exp beyond time.Time", hdr, strings.Replace(payload, `"exp":`, `"exp":9223372036854775000,"x":`, 1),
			"claim exp: 9223372036854775000 is outside the range of unix seconds"},
		{"iat far below", hdr, strings.Replace(payload, `"iat":`, `"iat":-1e300,"x":`, 1), "claim iat: -1e300 is outside the range"},
		{"repeated sub", hdr, withClaim(`"sub":"other"`),
			`malformed jwt payload: claim "sub" appears twice; build and sign the token again with each claim once`},
		{"repeated exp, escaped", hdr, withClaim(`"\u0065xp":1`), `claim "exp" appears twice`},
		{"repeated unknown claim", hdr, withClaim(`"x":1,"x":1`), `claim "x" appears twice`},
		{"crit header", withHeader(`"crit":["exp"],"exp":1`), payload,
			"malformed jwt header: header has crit, naming critical extensions etcha does not implement (RFC 7515 §4.1.11); sign the token without crit"},
		{"empty crit header", withHeader(`"crit":[]`), payload, "header has crit"},
		{"repeated alg", withHeader(`"alg":"ES256"`), payload,
			`malformed jwt header: header parameter "alg" appears twice; sign the token again with each header parameter once`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := signRaw(t, tc.hdr, tc.payload, priv)
			parts := strings.Split(tok, ".")
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			if err := jwt.SigningMethodEdDSA.Verify(parts[0]+"."+parts[1], sig, pub.Key); err != nil {
				t.Fatalf("test token is not validly signed: %v", err)
			}
			for _, o := range []VerifyOptions{opts(pub), opts()} {
				c, _, err := Verify(tok, o)
				if err == nil || c != nil {
					t.Fatalf("Verify(%d keys) = %v, %v; want a refusal", len(o.Keys), c, err)
				}
				if got := ReasonOf(err); got != ReasonMalformed {
					t.Fatalf("Verify(%d keys) reason = %q (%v), want %q", len(o.Keys), got, err, ReasonMalformed)
				}
				if !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error = %q, want one line containing %q", err, tc.msg)
				}
			}
		})
	}
}
