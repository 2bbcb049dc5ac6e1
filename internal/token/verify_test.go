package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func fixedNow() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) }

func testClaims() *Claims {
	now := fixedNow()
	return &Claims{
		Audience:      []string{"web", "db"},
		IssuedAt:      now.Add(-time.Hour),
		NotBefore:     now.Add(-time.Hour),
		ExpiresAt:     now.Add(time.Hour),
		Issuer:        "build1",
		ID:            "app-pattern",
		Subject:       "app",
		BuildManifest: "nginx 1.27.0\n",
		Pattern: Pattern{Entrypoint: "/patterns/app.jsonnet", Files: map[string]string{
			"/patterns/app.jsonnet":     "local e = import '../lib/etcha/file.libsonnet';\n{run: [e({path: '/tmp/x'})]}\n",
			"/lib/etcha/file.libsonnet": "function(c) {id: 'file ' + c.path, change: 'touch ' + c.path}\n",
		}},
		RunVars: map[string]any{"env": "prod", "replicas": 3},
		Version: "v2026.11.0",
		Cache:   map[string]any{`getRecord["example.com"]`: []any{"1.2.3.4"}},
	}
}

func mustSign(t testing.TB, c *Claims, k PrivateKey) string {
	t.Helper()
	s, err := Sign(c, k)
	if err != nil {
		t.Fatalf("Sign = %v", err)
	}
	return s
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func opts(keys ...PublicKey) VerifyOptions { return VerifyOptions{Keys: keys, Now: fixedNow} }

func TestSignVerifyRoundTrip(t *testing.T) {
	docPriv, docPub := docKeys(t)
	for _, tc := range []struct{ typ, alg string }{{"ed25519", "EdDSA"}, {"ecp256", "ES256"}, {"rsa2048", "RS256"}, {"doc", "EdDSA"}} {
		t.Run(tc.typ, func(t *testing.T) {
			priv, pub := docPriv, docPub
			if tc.typ != "doc" {
				priv, pub = genKeys(t, tc.typ)
			}
			tok := mustSign(t, testClaims(), priv)
			var hdr map[string]any
			h, _, _ := strings.Cut(tok, ".")
			b, _ := base64.RawURLEncoding.DecodeString(h)
			if err := json.Unmarshal(b, &hdr); err != nil {
				t.Fatalf("header: %v", err)
			}
			if got, want := fmt.Sprint(hdr), fmt.Sprintf("map[alg:%s kid:%s typ:JWT]", tc.alg, priv.ID); got != want {
				t.Fatalf("header = %s, want %s", got, want)
			}
			_, other := genKeys(t, "ed25519")
			c, key, err := Verify(tok, opts(other, pub))
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if !key.Equal(pub) {
				t.Fatalf("Verify returned key %s, want %s", key, pub)
			}
			want := testClaims()
			if !Equal(c, want, false) || !c.ExpiresAt.Equal(want.ExpiresAt) || !c.IssuedAt.Equal(want.IssuedAt) ||
				c.Subject != want.Subject || strings.Join(c.Audience, ",") != "web,db" || c.RunVars["env"] != "prod" {
				t.Fatalf("Verify claims = %+v, want %+v", c, want)
			}
		})
	}
}

func TestSignWithoutKeyID(t *testing.T) {
	priv, pub := genKeys(t, "ed25519")
	priv.ID, pub.ID = "", ""
	tok := mustSign(t, testClaims(), priv)
	h, _, _ := strings.Cut(tok, ".")
	if got, want := h, segment(t, map[string]string{"alg": "EdDSA", "typ": "JWT"}); got != want {
		t.Fatalf("header segment = %s, want %s (no kid)", got, want)
	}
	if _, _, err := Verify(tok, opts(pub)); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if _, err := Sign(testClaims(), PrivateKey{Type: "hmac", Key: priv.Key}); err == nil {
		t.Fatalf("Sign with an unknown key type succeeded")
	}
	if _, err := Sign(testClaims(), PrivateKey{Type: ECP256Private, Key: priv.Key}); err == nil {
		t.Fatalf("Sign with an ed25519 key labelled ecp256 succeeded")
	}
}

func TestVerifyKeyOrder(t *testing.T) {
	a, aPub := genKeys(t, "ed25519")
	b, bPub := genKeys(t, "ed25519")
	impostor := aPub // a's key bytes claiming b's ID
	impostor.ID = b.ID
	cases := []struct {
		name   string
		signer PrivateKey
		kid    string
		keys   []PublicKey
		want   PublicKey
	}{
		{"kid match preferred", b, b.ID, []PublicKey{aPub, bPub}, bPub},
		{"unknown kid falls back", b, "nope", []PublicKey{aPub, bPub}, bPub},
		{"no kid falls back", a, "", []PublicKey{bPub, aPub}, aPub},
		{"wrong key with matching kid falls back", b, b.ID, []PublicKey{impostor, bPub}, bPub},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.signer.ID = tc.kid
			_, key, err := Verify(mustSign(t, testClaims(), tc.signer), opts(tc.keys...))
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if !key.Equal(tc.want) {
				t.Fatalf("verified by %s, want %s", key, tc.want)
			}
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	docPriv, docPub := docKeys(t)
	ecPriv, ecPub := genKeys(t, "ecp256")
	otherPriv, _ := genKeys(t, "ed25519")
	good := mustSign(t, testClaims(), docPriv)
	parts := strings.Split(good, ".")
	withClaims := func(f func(*Claims)) string {
		c := testClaims()
		f(c)
		return mustSign(t, c, docPriv)
	}
	hs := func(secret []byte) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, testClaims()).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubDER, _ := base64.StdEncoding.DecodeString(strings.Split(docPublic, ":")[1])
	tampered := testClaims()
	tampered.Pattern.Files["/patterns/app.jsonnet"] = "{run: [{id: 'evil', change: 'rm -rf /'}]}"
	big := strings.Repeat("a", DefaultMaxSize)
	withRule := func(rule string) VerifyOptions { o := opts(docPub); o.JWTRule = rule; return o }

	for _, tc := range []struct {
		name string
		tok  string
		o    VerifyOptions
		want Reason
		msg  string
	}{
		{"alg none", segment(t, map[string]string{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", opts(docPub), ReasonSignature, `alg "none" is not accepted`},
		{"alg none with signature", segment(t, map[string]string{"alg": "none"}) + "." + parts[1] + "." + parts[2], opts(docPub), ReasonSignature, `alg "none"`},
		{"HS256 with public DER as secret", hs(pubDER), opts(docPub), ReasonSignature, `alg "HS256" is not accepted`},
		{"HS256 with public key text as secret", hs([]byte(docPublic)), opts(docPub), ReasonSignature, `alg "HS256"`},
		{"wrong key", mustSign(t, testClaims(), otherPriv), opts(docPub), ReasonSignature, "matches none of the 1 EdDSA verify keys"},
		{"tampered payload", parts[0] + "." + segment(t, tampered) + "." + parts[2], opts(docPub), ReasonSignature, "matches none"},
		{"header alg switched to ES256", segment(t, map[string]string{"alg": "ES256", "kid": docPub.ID, "typ": "JWT"}) + "." + parts[1] + "." + parts[2], opts(docPub, ecPub), ReasonSignature, "matches none of the 1 ES256"},
		{"header alg switched to RS256, no rsa key", segment(t, map[string]string{"alg": "RS256"}) + "." + parts[1] + "." + parts[2], opts(docPub, ecPub), ReasonSignature, "none of the 2 verify keys is of that type"},
		{"ES256 token, ed25519 keys", mustSign(t, testClaims(), ecPriv), opts(docPub), ReasonSignature, "signed with ES256"},
		{"expired", withClaims(func(c *Claims) { c.ExpiresAt = fixedNow() }), opts(docPub), ReasonExpired, "jwt expired at 2026-11-22T10:00:00Z; build and publish a new one"},
		{"nbf in the future", withClaims(func(c *Claims) { c.NotBefore = fixedNow().Add(time.Second) }), opts(docPub), ReasonNotYetValid, "not valid before 2026-11-22T10:00:01Z"},
		{"missing entrypoint", withClaims(func(c *Claims) { c.Pattern.Entrypoint = "" }), opts(docPub), ReasonNoEntrypoint, "no etchaPattern entrypoint"},
		{"entrypoint not in files", withClaims(func(c *Claims) { c.Pattern.Entrypoint = "/main.jsonnet" }), opts(docPub), ReasonNoEntrypoint, `entrypoint "/main.jsonnet" is not among its files`},
		{"no files", withClaims(func(c *Claims) { c.Pattern.Files = nil }), opts(docPub), ReasonNoEntrypoint, "is not among its files"},
		{"colliding file paths", withClaims(func(c *Claims) { c.Pattern.Files["patterns/x/../app.jsonnet"] = "{run: []}" }), opts(docPub), ReasonMalformed,
			`files "/patterns/app.jsonnet" and "patterns/x/../app.jsonnet" are the same path /patterns/app.jsonnet`},
		{"exp as a string", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"4102444800"}`)) + "." + parts[2],
			opts(docPub), ReasonMalformed, "claim exp: must be a number of unix seconds, not a string"},
		{"duplicate files key", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"etchaPattern":{"entrypoint":"/m.jsonnet","files":{"/m.jsonnet":"{}","/m.jsonnet":"{run: []}"}}}`)) + "." + parts[2],
			opts(docPub), ReasonMalformed, `files has the key "/m.jsonnet" twice`},
		{"truncated in payload", good[:len(parts[0])+20], opts(docPub), ReasonMalformed, "2 parts, want 3"},
		{"truncated signature", good[:len(good)-10], opts(docPub), ReasonSignature, "matches none"},
		{"garbled base64 payload", parts[0] + "." + parts[1][:10] + "!*" + parts[1][12:] + "." + parts[2], opts(docPub), ReasonMalformed, "malformed jwt payload: bad base64url"},
		{"garbled base64 header", "%%" + good, opts(docPub), ReasonMalformed, "malformed jwt header"},
		{"garbled base64 signature", good + "!", opts(docPub), ReasonMalformed, "malformed jwt signature"},
		{"payload not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + "." + parts[2], opts(docPub), ReasonMalformed, "bad JSON"},
		{"payload wrong claim type", parts[0] + "." + segment(t, map[string]any{"etchaVersion": 5}) + "." + parts[2], opts(docPub), ReasonMalformed, "malformed jwt payload"},
		{"four parts", good + ".x", opts(docPub), ReasonMalformed, "4 parts"},
		{"empty", "", opts(docPub), ReasonMalformed, "1 parts"},
		{"oversized default limit", good + big, opts(docPub), ReasonTooLarge, "over the 1048576-byte limit"},
		{"oversized custom limit", good, VerifyOptions{Keys: PublicKeys{docPub}, Now: fixedNow, MaxSize: 100}, ReasonTooLarge, "over the 100-byte limit"},
		{"no keys", good, opts(), ReasonNoKeys, "no verify keys configured"},
		{"jwtRule false", good, withRule(`any(aud, {# in ['a', 'b']})`), ReasonRule, "jwt refused by jwtRule"},
		{"jwtRule absent claim", withClaims(func(c *Claims) { c.Audience = nil }), withRule(`any(aud, {# == 'web'})`), ReasonRule, "jwt refused by jwtRule"},
		{"jwtRule syntax error", good, withRule(`aud ==`), ReasonRule, "does not compile"},
		{"jwtRule not bool", good, withRule(`1 + 1`), ReasonRule, "does not compile"},
		{"jwtRule runtime error", good, withRule(`etchaRunVars.nope.deeper == 1`), ReasonRule, "jwtRule"},
		{"jwtRule unknown name", good, withRule(`nosuchclaim == 1`), ReasonRule, "jwt refused by jwtRule"},
		{"jwtRule absent iss", withClaims(func(c *Claims) { c.Issuer = "" }), withRule(`iss == "someone"`), ReasonRule, `jwt refused by jwtRule "iss == \"someone\""`},
		{"jwtRule absent jti and sub", withClaims(func(c *Claims) { c.ID, c.Subject = "", "" }), withRule(`jti startsWith "x" || sub matches "^y"`), ReasonRule, "jwt refused by jwtRule"},
		{"jwtRule absent exp", withClaims(func(c *Claims) { c.ExpiresAt = time.Time{} }), withRule(`exp != nil && exp - iat <= 86400`), ReasonRule, "jwt refused by jwtRule"},
		{"jwtRule absent exp arithmetic", withClaims(func(c *Claims) { c.ExpiresAt = time.Time{} }), withRule(`exp - iat <= 86400`), ReasonRule, "failed on this jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, key, err := Verify(tc.tok, tc.o)
			if err == nil {
				t.Fatalf("Verify accepted the token (key %s)", key)
			}
			if c != nil {
				t.Fatalf("Verify returned claims with error %v", err)
			}
			t.Logf("refused: %v", err)
			if got, want := ReasonOf(err), tc.want; got != want {
				t.Fatalf("reason = %q (%v), want %q", got, err, want)
			}
			if !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error = %q, want one line containing %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), strings.Split(docPrivate, ":")[1][:20]) {
				t.Fatalf("error %q contains private key material", err)
			}
		})
	}
}

func TestVerifyTimeBoundaries(t *testing.T) {
	priv, pub := docKeys(t)
	c := testClaims()
	tok := mustSign(t, c, priv)
	for _, tc := range []struct {
		name string
		now  time.Time
		want Reason
	}{
		{"just before exp", c.ExpiresAt.Add(-time.Nanosecond), ""},
		{"at exp", c.ExpiresAt, ReasonExpired},
		{"after exp", c.ExpiresAt.Add(time.Second), ReasonExpired},
		{"at nbf", c.NotBefore, ""},
		{"just before nbf", c.NotBefore.Add(-time.Nanosecond), ReasonNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Verify(tok, VerifyOptions{Keys: PublicKeys{pub}, Now: func() time.Time { return tc.now }})
			if got, want := ReasonOf(err), tc.want; got != want {
				t.Fatalf("reason = %q (%v), want %q", got, err, want)
			}
		})
	}
	noTimes := testClaims()
	noTimes.ExpiresAt, noTimes.NotBefore = time.Time{}, time.Time{}
	if _, _, err := Verify(mustSign(t, noTimes, priv), VerifyOptions{Keys: PublicKeys{pub}}); err != nil {
		t.Fatalf("Verify(no exp/nbf, real clock) = %v", err)
	}
}

func TestVerifyRuleAccepts(t *testing.T) {
	priv, pub := docKeys(t)
	tok := mustSign(t, testClaims(), priv)
	for _, rule := range []string{
		`any(aud, {# in ['a', 'web']})`,
		`etchaRunVars.env == 'prod' && etchaRunVars.replicas == 3`,
		`sub == 'app' && iss startsWith 'build' && jti == 'app-pattern'`,
		`exp - iat == 7200`,
		`'/patterns/app.jsonnet' in keys(etchaPattern.files)`,
		`etchaVersion matches '^v2026\\.'`,
		`exp != nil && exp - iat <= 86400`,
		`len(etchaCache) == 1 && etchaBuildManifest contains 'nginx'`,
	} {
		t.Run(rule, func(t *testing.T) {
			o := opts(pub)
			o.JWTRule = rule
			if err := ValidateRule(rule); err != nil {
				t.Fatalf("ValidateRule = %v", err)
			}
			if _, _, err := Verify(tok, o); err != nil {
				t.Fatalf("Verify = %v", err)
			}
		})
	}
	for _, bad := range []string{`aud ==`, `1 + 1`, `(`} {
		if err := ValidateRule(bad); err == nil {
			t.Fatalf("ValidateRule(%q) = nil, want an error", bad)
		}
	}
	if err := ValidateRule(`customClaim == 'x'`); err != nil {
		t.Fatalf("ValidateRule(extra claim) = %v, want nil", err)
	}
}

func TestParseWithoutVerifying(t *testing.T) {
	priv, _ := genKeys(t, "ed25519")
	c := testClaims()
	c.ExpiresAt = fixedNow().Add(-24 * time.Hour)
	tok := mustSign(t, c, priv)
	got, err := Parse("  "+tok+"\n", 0)
	if err != nil {
		t.Fatalf("Parse(expired, unknown key) = %v", err)
	}
	if !Equal(got, c, false) || !got.ExpiresAt.Equal(c.ExpiresAt) {
		t.Fatalf("Parse claims = %+v, want %+v", got, c)
	}
	if _, err := Parse(tok, 10); ReasonOf(err) != ReasonTooLarge {
		t.Fatalf("Parse(maxSize 10) = %v, want ReasonTooLarge", err)
	}
	if _, err := Parse("a.b", 0); ReasonOf(err) != ReasonMalformed {
		t.Fatalf("Parse(a.b) = %v, want ReasonMalformed", err)
	}
}

func TestCheckClaims(t *testing.T) {
	if err := CheckClaims(testClaims(), `sub == 'app'`); err != nil {
		t.Fatalf("CheckClaims(good) = %v", err)
	}
	if got, want := ReasonOf(CheckClaims(testClaims(), `sub == 'db'`)), ReasonRule; got != want {
		t.Fatalf("CheckClaims(false rule) reason = %q, want %q", got, want)
	}
	if got, want := ReasonOf(CheckClaims(&Claims{}, "")), ReasonNoEntrypoint; got != want {
		t.Fatalf("CheckClaims(empty) reason = %q, want %q", got, want)
	}
	if got, want := ReasonOf(CheckClaims(nil, "")), ReasonMalformed; got != want {
		t.Fatalf("CheckClaims(nil) reason = %q, want %q", got, want)
	}
	// The entrypoint is compared after PatternPath, as the renderer does.
	unslashed := testClaims()
	unslashed.Pattern.Entrypoint = "patterns/app.jsonnet"
	if err := CheckClaims(unslashed, ""); err != nil {
		t.Fatalf("CheckClaims(entrypoint without /) = %v", err)
	}
}

// benchClaims returns claims whose pattern holds about 100 commands.
func benchClaims() *Claims {
	c := testClaims()
	var b strings.Builder
	b.WriteString("{\n  run: [\n")
	for i := range 100 {
		fmt.Fprintf(&b, "    {id: 'cmd %03d', check: 'test -f /etc/app/%03d.conf', change: 'printf %%s \"setting=%d\" > /etc/app/%03d.conf', onChange: ['etcha:reload']},\n", i, i, i, i)
	}
	b.WriteString("  ],\n}\n")
	c.Pattern.Files[c.Pattern.Entrypoint] = b.String()
	return c
}

// BenchmarkVerifyEd25519 verifies a token of about 100 commands: cached,
// the same token each time (a source re-running its pattern); uncached, a
// token never seen before each time.
func BenchmarkVerifyEd25519(b *testing.B) {
	priv, pub := docKeys(b)
	o := opts(pub)
	b.Run("cached", func(b *testing.B) {
		tok := mustSign(b, benchClaims(), priv)
		b.SetBytes(int64(len(tok)))
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Verify(tok, o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			c := benchClaims()
			c.ID = fmt.Sprintf("bench %d %d", i, time.Now().UnixNano())
			toks[i] = mustSign(b, c, priv)
		}
		b.SetBytes(int64(len(toks[0])))
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, _, err := Verify(toks[i], o); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSignatureFormat checks signatures with the standard library alone, so
// the wire format (JWS signing input, raw R‖S for ES256, PKCS#1 v1.5 for
// RS256) does not depend on the jwt library agreeing with itself.
func TestSignatureFormat(t *testing.T) {
	for _, typ := range []string{"ed25519", "ecp256", "rsa2048"} {
		t.Run(typ, func(t *testing.T) {
			priv, pub := genKeys(t, typ)
			tok := mustSign(t, testClaims(), priv)
			i := strings.LastIndexByte(tok, '.')
			input, sig := []byte(tok[:i]), tok[i+1:]
			raw, err := base64.RawURLEncoding.DecodeString(sig)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256(input)
			var ok bool
			switch k := pub.Key.(type) {
			case ed25519.PublicKey:
				ok = ed25519.Verify(k, input, raw)
			case *ecdsa.PublicKey:
				if len(raw) != 64 {
					t.Fatalf("ES256 signature is %d bytes, want 64 (raw R‖S)", len(raw))
				}
				r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
				ok = ecdsa.Verify(k, digest[:], r, s)
			case *rsa.PublicKey:
				ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], raw) == nil
			}
			if !ok {
				t.Fatalf("%s signature does not verify with the standard library", typ)
			}
		})
	}
}

func TestErrorsClipTokenText(t *testing.T) {
	priv, pub := docKeys(t)
	long := strings.Repeat("k", 5000)
	priv.ID = long
	_, _, err := Verify(mustSign(t, testClaims(), priv), opts(PublicKey{Type: pub.Type, ID: "x", Key: ed25519.PublicKey(make([]byte, 32))}))
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error is %d bytes, want a short message: %.200v", len(err.Error()), err)
	}
	c := testClaims()
	c.Pattern.Entrypoint = long
	if err := CheckClaims(c, ""); err == nil || len(err.Error()) > 400 {
		t.Fatalf("CheckClaims error = %.200v, want a short message", err)
	}
}
