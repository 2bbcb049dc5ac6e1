// Package token builds, signs, parses and verifies Etcha JWTs (spec §3).
//
// It handles keys in Etcha's text form "<type>:<base64 DER>[:<id>]" for
// Ed25519, ECDSA P-256 and RSA-2048 ([ParsePublicKey], [ParsePrivateKey],
// [GenerateKeys]), the Etcha claim set ([Claims]), signing with the algorithm
// fixed by the key type ([Sign]), and verification against a list of keys
// with exp/nbf, a jwtRule expression and the pattern entrypoint check
// ([Verify]). [Equal] is the "same pattern" predicate of `etcha compare` and
// of pulls.
//
// It deliberately does not: accept "none" or HMAC tokens, trust the header's
// alg beyond picking which configured keys to try, decrypt PBKDF-encrypted
// private keys, run signingCommands or verifyCommands (callers do that and
// use [CheckClaims] for the checks that still apply), read files or fetch
// URLs, or log anything.
package token

import (
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Sign encodes claims and signs them with key. The alg is fixed by the key
// type (ed25519 → EdDSA, ecp256 → ES256, rsa2048 → RS256); the header is
// {"alg", "kid" (only when key.ID is set), "typ": "JWT"}. Times are
// truncated to whole seconds. Claims are used as given: Sign does not set
// iat or nbf.
func Sign(claims *Claims, key PrivateKey) (string, error) {
	_, method, ok := keyAlg(key.Type)
	if !ok || key.Key == nil {
		return "", fmt.Errorf("sign: unusable signing key type %s; use one of ed25519private, ecp256private, rsa2048private", quoteType(key.Type))
	}
	if claims == nil {
		return "", fmt.Errorf("sign: no claims")
	}
	if err := checkKey(key.Type, key.Key.Public()); err != nil {
		return "", fmt.Errorf("sign with %s key %q: %w", key.Type, key.ID, err)
	}
	t := jwt.NewWithClaims(method, claims)
	if key.ID != "" {
		t.Header["kid"] = key.ID
	}
	s, err := t.SignedString(key.Key)
	if err != nil {
		return "", fmt.Errorf("sign with %s key %q: %w", key.Type, key.ID, err)
	}
	return s, nil
}
