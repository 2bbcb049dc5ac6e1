package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultMaxSize is the token size limit used when a MaxSize is 0 or less.
const DefaultMaxSize = 1 << 20

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Keys are the verify keys (run.verifyKeys followed by the source's
	// verifyKeys). Empty means every token is refused with ReasonNoKeys.
	Keys PublicKeys
	// JWTRule is an expr-lang expression over the claims (see CheckClaims).
	// Empty means no rule.
	JWTRule string
	// Now returns the current time for exp/nbf. Nil means time.Now.
	Now func() time.Time
	// MaxSize is the largest accepted token in bytes. 0 or less means
	// DefaultMaxSize (1 MiB).
	MaxSize int
}

// header is the part of the JOSE header Verify looks at.
type header struct {
	Alg string
	Kid string
}

// UnmarshalJSON decodes a JOSE header. Names match exactly; a repeated
// name is refused (two verifiers could read different algs or key ids from
// the same bytes), and so is any crit parameter: this package implements
// no critical extension, and RFC 7515 §4.1.11 says a token naming one it
// does not understand must be rejected (spec §11.13). Both are
// *policyError.
func (h *header) UnmarshalJSON(b []byte) error {
	dup := func(name string) error {
		return &policyError{fmt.Sprintf("header parameter %q appears twice; sign the token again with each header parameter once", clip(name))}
	}
	d := json.NewDecoder(bytes.NewReader(b)) // json.Unmarshal checked what follows the object
	return decodeObject(d, "header", dup, func(name string) error {
		var err error
		switch name {
		case "alg":
			err = d.Decode(&h.Alg)
		case "kid":
			err = d.Decode(&h.Kid)
		case "crit":
			return &policyError{"header has crit, naming critical extensions etcha does not implement (RFC 7515 §4.1.11); sign the token without crit"}
		default:
			var skip json.RawMessage
			err = d.Decode(&skip)
		}
		if err != nil {
			return fmt.Errorf("header parameter %s: %w", clip(name), err)
		}
		return nil
	})
}

// parsed is a decoded, unverified token.
type parsed struct {
	input  string // header.payload, the signing input
	sig    []byte
	header header
	claims *Claims
}

const malformedHint = "the input must be one JWT: three base64url parts joined by dots"

// Parse decodes a token without verifying anything, for `etcha jwt`, which
// prints the claims even when verification fails. Surrounding whitespace is
// ignored. maxSize as in VerifyOptions.MaxSize. Errors are *VerifyError
// with ReasonTooLarge or ReasonMalformed.
func Parse(token string, maxSize int) (*Claims, error) {
	p, err := parse(token, maxSize)
	if err != nil {
		return nil, err
	}
	return p.claims, nil
}

// checkSize refuses a token over maxSize bytes (DefaultMaxSize when
// maxSize is 0 or less).
func checkSize(tok string, maxSize int) error {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if len(tok) > maxSize {
		return refuse(ReasonTooLarge, nil, "jwt is %d bytes, over the %d-byte limit; make the pattern smaller or raise the limit", len(tok), maxSize)
	}
	return nil
}

func parse(tok string, maxSize int) (*parsed, error) {
	if err := checkSize(tok, maxSize); err != nil {
		return nil, err
	}
	tok = strings.TrimSpace(tok)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, refuse(ReasonMalformed, nil, "malformed jwt: %d parts, want 3; %s", len(parts), malformedHint)
	}
	p := &parsed{input: parts[0] + "." + parts[1], claims: &Claims{}}
	if err := decodePart(parts[0], &p.header); err != nil {
		return nil, malformed("header", err)
	}
	if err := decodePart(parts[1], p.claims); err != nil {
		return nil, malformed("payload", err)
	}
	// An empty signature (alg "none") decodes; the signature step refuses it.
	var err error
	if p.sig, err = base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return nil, refuse(ReasonMalformed, err, "malformed jwt signature: %s; %s", firstLine(err), malformedHint)
	}
	return p, nil
}

// malformed refuses a token whose part could not be decoded, with the
// error's own fix for a *policyError, else the generic hint.
func malformed(part string, err error) *VerifyError {
	var pe *policyError
	if errors.As(err, &pe) {
		return refuse(ReasonMalformed, err, "malformed jwt %s: %s", part, pe.msg)
	}
	return refuse(ReasonMalformed, err, "malformed jwt %s: %s; %s", part, firstLine(err), malformedHint)
}

// decodePart decodes one base64url JSON part into v. Claims are decoded
// with their own one-pass decoder, skipping json.Unmarshal's extra
// validation pass over what may be a megabyte of pattern text.
func decodePart(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("bad base64url: %w", err)
	}
	if c, ok := v.(*Claims); ok {
		err = c.UnmarshalJSON(b)
	} else {
		err = json.Unmarshal(b, v)
	}
	var pe *policyError
	if err != nil && !errors.As(err, &pe) {
		return fmt.Errorf("bad JSON: %w", err)
	}
	return err
}

// Verify checks a token and returns its claims and the key that verified
// it. Steps, in order (spec §3.6):
//
//  1. Size (ReasonTooLarge), then decoding of the three parts
//     (ReasonMalformed; this refuses exp/iat/nbf given as strings or
//     outside the range of int64 unix seconds, a repeated claim or header
//     parameter, a key repeated in etchaPattern or its files, and any crit
//     header, spec §11.13). Surrounding whitespace is ignored. No key is
//     tried before this step passes.
//  2. Keys: none configured → ReasonNoKeys.
//  3. Signature: only keys whose type matches the header alg are tried
//     (EdDSA ↔ ed25519, ES256 ↔ ecp256, RS256 ↔ rsa2048), each with the
//     algorithm pinned to that key type; keys whose ID equals the header
//     kid first, then the others in list order. "none", HMAC and any other
//     alg are refused. No key verifies → ReasonSignature.
//  4. Times, no leeway: now >= exp → ReasonExpired; now < nbf →
//     ReasonNotYetValid.
//  5. CheckClaims: jwtRule (ReasonRule), then etchaPattern file keys
//     that are the same path (ReasonMalformed), then the entrypoint
//     (ReasonNoEntrypoint).
//
// Every refusal is a *VerifyError; on refusal the claims are nil. Verify is
// safe for concurrent use.
//
// Steps 1 to 3 depend only on the token text and the keys, so their
// outcome is cached (bounded, by a hash of both): verifying the same token
// with the same keys again skips decoding and the signature check, while
// steps 4 and 5 run on every call. The claims returned are the caller's
// own: changing them does not change what a later call returns.
func Verify(token string, opts VerifyOptions) (*Claims, PublicKey, error) {
	if err := checkSize(token, opts.MaxSize); err != nil { // (1), before the cache: MaxSize may differ between calls
		return nil, PublicKey{}, err
	}
	claims, key, err := verifyCached(token, opts.Keys) // (1)–(3)
	if err != nil {
		return nil, PublicKey{}, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if err := checkTimes(claims, now()); err != nil { // (4)
		return nil, PublicKey{}, err
	}
	if err := CheckClaims(claims, opts.JWTRule); err != nil { // (5)
		return nil, PublicKey{}, err
	}
	return claims, key, nil
}

// verifyCached runs steps 1 to 3 of Verify, or returns their cached
// outcome for the same token and keys.
func verifyCached(token string, keys PublicKeys) (*Claims, PublicKey, error) {
	ck := cacheKey(token, keys)
	if claims, key, ok := verified.get(ck); ok {
		return claims, key, nil
	}
	p, err := parse(token, len(token)) // (1); the size was checked
	if err != nil {
		return nil, PublicKey{}, err
	}
	if len(keys) == 0 { // (2)
		return nil, PublicKey{}, refuse(ReasonNoKeys, nil, "no verify keys configured; add the signer's public key to run.verifyKeys or the source's verifyKeys")
	}
	key, err := verifySignature(p, keys) // (3)
	if err != nil {
		return nil, PublicKey{}, err
	}
	verified.add(ck, len(token), p.claims, key)
	return p.claims, key, nil
}

// candidates returns the keys of the type matching alg, those whose ID is
// kid first.
func candidates(keys PublicKeys, alg, kid string) []PublicKey {
	var first, rest []PublicKey
	for _, k := range keys {
		if k.Alg() != alg || k.Key == nil {
			continue
		}
		if kid != "" && k.ID == kid {
			first = append(first, k)
		} else {
			rest = append(rest, k)
		}
	}
	return append(first, rest...)
}

func verifySignature(p *parsed, keys PublicKeys) (PublicKey, error) {
	alg := p.header.Alg
	switch alg {
	case "EdDSA", "ES256", "RS256":
	default:
		return PublicKey{}, refuse(ReasonSignature, nil, "jwt alg %q is not accepted; sign it with an ed25519, ecp256 or rsa2048 key (EdDSA, ES256, RS256)", clip(alg))
	}
	cands := candidates(keys, alg, p.header.Kid)
	if len(cands) == 0 {
		return PublicKey{}, refuse(ReasonSignature, nil, "jwt is signed with %s (kid %q) but none of the %d verify keys is of that type; add the signer's public key to the verify keys", alg, clip(p.header.Kid), len(keys))
	}
	var last error
	for _, k := range cands {
		if last = checkSignature(p, k); last == nil {
			return k, nil
		}
	}
	return PublicKey{}, refuse(ReasonSignature, last, "jwt signature (%s, kid %q) matches none of the %d %s verify keys; sign it with a key whose public key is configured, or add that key", alg, clip(p.header.Kid), len(cands), alg)
}

// checkSignature verifies p with one key. The algorithm comes from the
// key's type, never from the header: the header alg only chose which keys
// to try.
func checkSignature(p *parsed, k PublicKey) error {
	_, method, ok := keyAlg(k.Type)
	if !ok {
		return fmt.Errorf("key %q has unknown type", k.ID)
	}
	return method.Verify(p.input, p.sig, k.Key)
}

func checkTimes(c *Claims, now time.Time) error {
	if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
		return refuse(ReasonExpired, nil, "jwt expired at %s; build and publish a new one", c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore) {
		return refuse(ReasonNotYetValid, nil, "jwt is not valid before %s (now %s); check the clocks of this host and the build host", c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// firstLine returns the first line of err's text; expr errors append a
// source excerpt on further lines.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// clip shortens text taken from an untrusted token before it goes into an
// error message.
func clip(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
