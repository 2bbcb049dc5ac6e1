package token

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// cached reports whether the outcome of verifying tok with keys is cached.
func cached(tok string, keys ...PublicKey) bool {
	_, _, ok := verified.get(cacheKey(tok, keys))
	return ok
}

// TestVerifyCachedChecksTimesAndRule: a token verified once is cached, and
// later calls still refuse it once expired, before nbf, or when the
// jwtRule refuses it.
func TestVerifyCachedChecksTimesAndRule(t *testing.T) {
	priv, pub := genKeys(t, "ed25519")
	c := testClaims()
	tok := mustSign(t, c, priv)
	if _, _, err := Verify(tok, opts(pub)); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if !cached(tok, pub) {
		t.Fatal("the verified token is not cached")
	}
	at := func(now time.Time) VerifyOptions {
		return VerifyOptions{Keys: PublicKeys{pub}, Now: func() time.Time { return now }}
	}
	for _, tc := range []struct {
		name string
		o    VerifyOptions
		want Reason
	}{
		{"at exp", at(c.ExpiresAt), ReasonExpired},
		{"after exp", at(c.ExpiresAt.Add(time.Hour)), ReasonExpired},
		{"before nbf", at(c.NotBefore.Add(-time.Second)), ReasonNotYetValid},
		{"rule", VerifyOptions{Keys: PublicKeys{pub}, Now: fixedNow, JWTRule: `iss == "someone else"`}, ReasonRule},
	} {
		claims, _, err := Verify(tok, tc.o)
		if got := ReasonOf(err); got != tc.want || claims != nil {
			t.Errorf("%s: Verify = %v, %v; want nil, %s", tc.name, claims, err, tc.want)
		}
	}
	if _, _, err := Verify(tok, opts(pub)); err != nil {
		t.Fatalf("Verify within the validity = %v", err)
	}
}

// TestVerifyCacheKeyedByKeysAndText: the cache answers only for the same
// token text and the same key list.
func TestVerifyCacheKeyedByKeysAndText(t *testing.T) {
	a, aPub := genKeys(t, "ed25519")
	_, bPub := genKeys(t, "ed25519")
	tok := mustSign(t, testClaims(), a)
	if _, _, err := Verify(tok, opts(aPub)); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if _, _, err := Verify(tok, opts(bPub)); ReasonOf(err) != ReasonSignature {
		t.Fatalf("Verify with another key = %v, want %s", err, ReasonSignature)
	}
	if _, _, err := Verify(tok, opts()); ReasonOf(err) != ReasonNoKeys {
		t.Fatalf("Verify without keys = %v, want %s", err, ReasonNoKeys)
	}
	sameBytesOtherID := aPub
	sameBytesOtherID.ID = "other"
	_, key, err := Verify(tok, opts(bPub, sameBytesOtherID))
	if err != nil || !key.Equal(sameBytesOtherID) {
		t.Fatalf("Verify with [b, a as other] = %v, %v; want verified by %s", key, err, sameBytesOtherID)
	}
	head, _, _ := strings.Cut(tok, ".")
	sig := tok[strings.LastIndex(tok, ".")+1:]
	flipped := byte('A')
	if sig[0] == 'A' {
		flipped = 'B'
	}
	tampered := tok[:len(tok)-len(sig)] + string(flipped) + sig[1:]
	if _, _, err := Verify(tampered, opts(aPub)); ReasonOf(err) != ReasonSignature {
		t.Fatalf("Verify of a tampered signature = %v, want %s", err, ReasonSignature)
	}
	if _, _, err := Verify(head+".e30."+sig, opts(aPub)); ReasonOf(err) != ReasonSignature {
		t.Fatalf("Verify of another payload = %v, want %s", err, ReasonSignature)
	}
	if cached(tampered, aPub) {
		t.Fatal("a refused token was cached")
	}
}

// TestVerifyCachedMaxSize: the size limit of each call applies, also to a
// token cached under a larger one.
func TestVerifyCachedMaxSize(t *testing.T) {
	priv, pub := genKeys(t, "ed25519")
	tok := mustSign(t, testClaims(), priv)
	o := opts(pub)
	o.MaxSize = len(tok)
	if _, _, err := Verify(tok, o); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	o.MaxSize = len(tok) - 1
	if _, _, err := Verify(tok, o); ReasonOf(err) != ReasonTooLarge {
		t.Fatalf("Verify over MaxSize = %v, want %s", err, ReasonTooLarge)
	}
}

// TestVerifyCachedClaimsAreCopies: changing the claims a call returned does
// not change what the next call returns.
func TestVerifyCachedClaimsAreCopies(t *testing.T) {
	priv, pub := genKeys(t, "ed25519")
	c := testClaims()
	c.RunVars["nested"] = map[string]any{"list": []any{"a"}}
	c.Extra = map[string]any{"extra": []any{"x"}}
	tok := mustSign(t, c, priv)
	want := func() string {
		claims, _, err := Verify(tok, opts(pub))
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
		b, err := claims.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}()
	for range 2 {
		claims, _, err := Verify(tok, opts(pub))
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
		b, err := claims.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("claims = %s\nwant     %s", b, want)
		}
		claims.Audience[0] = "changed"
		claims.Pattern.Files[claims.Pattern.Entrypoint] = "changed"
		claims.RunVars["env"] = "changed"
		claims.RunVars["nested"].(map[string]any)["list"].([]any)[0] = "changed"
		claims.Cache[`getRecord["example.com"]`].([]any)[0] = "changed"
		claims.Extra["extra"].([]any)[0] = "changed"
	}
}

// TestVerifiedCacheBounds: at most max entries and maxBytes of token text,
// least recently used evicted first; a token over maxOne is not cached.
func TestVerifiedCacheBounds(t *testing.T) {
	c := newVerifiedCache(2, 100, 60)
	key := func(i int) [32]byte { return cacheKey(fmt.Sprint(i), nil) }
	has := func(i int) bool { _, _, ok := c.get(key(i)); return ok }
	claims := testClaims()
	c.add(key(1), 10, claims, PublicKey{})
	c.add(key(2), 10, claims, PublicKey{})
	has(1) // 1 is now the most recently used
	c.add(key(3), 10, claims, PublicKey{})
	if !has(1) || has(2) || !has(3) {
		t.Fatalf("cached 1, 2, 3 = %v, %v, %v; want true, false, true", has(1), has(2), has(3))
	}
	c.add(key(4), 61, claims, PublicKey{})
	if has(4) {
		t.Fatal("a token over maxOne was cached")
	}
	c.add(key(5), 60, claims, PublicKey{})
	c.add(key(6), 50, claims, PublicKey{}) // 60 + 50 > 100: evicts 5
	if has(5) || !has(6) || c.bytes > 100 || c.lru.Len() > 2 {
		t.Fatalf("cached 5, 6 = %v, %v, %d bytes, %d entries; want false, true, ≤ 100, ≤ 2", has(5), has(6), c.bytes, c.lru.Len())
	}
}

// TestCompiledRuleCache: a rule compiles once, and the cache stays bounded.
func TestCompiledRuleCache(t *testing.T) {
	p1, err := compiledRule(`iss == "a"`)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := compiledRule(`iss == "a"`)
	if err != nil || p1 != p2 {
		t.Fatalf("second compile = %p, %v; want the cached %p", p2, err, p1)
	}
	for i := range rulesMax + 5 {
		if _, err := compiledRule(fmt.Sprintf("iat > %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	rules.mu.Lock()
	n := len(rules.progs)
	rules.mu.Unlock()
	if n > rulesMax {
		t.Fatalf("%d rules cached, want at most %d", n, rulesMax)
	}
	if _, err := compiledRule("iss =="); err == nil {
		t.Fatal("a rule that does not compile was accepted")
	}
}
