package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Pattern is the etchaPattern claim: the raw Jsonnet entrypoint path and every
// file it imports, keyed by "/"-prefixed path relative to the build root.
type Pattern struct {
	Entrypoint string            `json:"entrypoint"`
	Files      map[string]string `json:"files"`
}

// Claims is the payload of an Etcha JWT (spec §3.2).
//
// Zero times and empty strings/lists mean "absent": the registered claims
// aud, exp, iat, iss, jti, nbf and sub are omitted from JSON when empty, while
// etchaBuildManifest, etchaPattern, etchaRunVars and etchaVersion are always
// emitted (§9 #47). etchaCache is omitted when empty. Times are whole unix
// seconds: sub-second parts are truncated when signing and when decoding.
// Decoded RunVars and Cache hold encoding/json's types (numbers float64);
// Map converts integral numbers to int64.
//
// Decoding accepts aud as a single string or a list, and the old claim name
// etchaRunEnv when etchaRunVars is absent.
type Claims struct {
	Audience  []string  // aud
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat
	NotBefore time.Time // nbf
	Issuer    string    // iss
	ID        string    // jti
	Subject   string    // sub

	BuildManifest string         // etchaBuildManifest
	Pattern       Pattern        // etchaPattern
	RunVars       map[string]any // etchaRunVars
	Version       string         // etchaVersion
	Cache         map[string]any // etchaCache

	// Extra holds claims this package does not know. Decoding fills it;
	// encoding emits it, except for keys that name a known claim.
	Extra map[string]any
}

var _ jwt.Claims = (*Claims)(nil)

// audience decodes aud from a string (one audience; "" is none) or a list
// of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s == "" {
			*a = nil
		} else {
			*a = audience{s}
		}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("aud must be a string or a list of strings")
	}
	*a = l
	return nil
}

// wireClaims is the JSON shape Claims encodes to. Field order is
// alphabetical, so encoded payloads are stable.
type wireClaims struct {
	Audience      []string         `json:"aud,omitempty"`
	BuildManifest string           `json:"etchaBuildManifest"`
	Cache         map[string]any   `json:"etchaCache,omitempty"`
	Pattern       Pattern          `json:"etchaPattern"`
	RunVars       map[string]any   `json:"etchaRunVars"`
	Version       string           `json:"etchaVersion"`
	ExpiresAt     *jwt.NumericDate `json:"exp,omitempty"`
	IssuedAt      *jwt.NumericDate `json:"iat,omitempty"`
	Issuer        string           `json:"iss,omitempty"`
	ID            string           `json:"jti,omitempty"`
	NotBefore     *jwt.NumericDate `json:"nbf,omitempty"`
	Subject       string           `json:"sub,omitempty"`
}

// isKnownClaim reports whether wireClaims handles the JSON claim name.
func isKnownClaim(name string) bool {
	switch name {
	case "aud", "etchaBuildManifest", "etchaCache", "etchaPattern", "etchaRunEnv",
		"etchaRunVars", "etchaVersion", "exp", "iat", "iss", "jti", "nbf", "sub":
		return true
	}
	return false
}

func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return &jwt.NumericDate{Time: t.Truncate(time.Second)}
}

// MarshalJSON encodes the claims as a JWT payload.
func (c Claims) MarshalJSON() ([]byte, error) {
	w := wireClaims{
		Audience:      c.Audience,
		BuildManifest: c.BuildManifest,
		Cache:         c.Cache,
		Pattern:       c.Pattern,
		RunVars:       c.RunVars,
		Version:       c.Version,
		ExpiresAt:     numericDate(c.ExpiresAt),
		IssuedAt:      numericDate(c.IssuedAt),
		Issuer:        c.Issuer,
		ID:            c.ID,
		NotBefore:     numericDate(c.NotBefore),
		Subject:       c.Subject,
	}
	if w.Pattern.Files == nil {
		w.Pattern.Files = map[string]string{}
	}
	if w.RunVars == nil {
		w.RunVars = map[string]any{}
	}
	b, err := json.Marshal(w)
	if err != nil || len(c.Extra) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.Extra {
		if isKnownClaim(k) {
			continue
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("claim %s: %w", k, err)
		}
		m[k] = raw
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes a JWT payload in one pass. Claim names match
// exactly (not case-insensitively, unlike encoding/json's struct decoding).
// A repeated claim name (after JSON unescaping), or a key repeated inside
// etchaPattern or its files, is refused: two decoders could read different
// values, and so different patterns or dates, from the same signed bytes
// (spec §11.13). It fails on claims of the wrong JSON type (for example a
// numeric etchaVersion) and on dates outside the range of unix seconds
// (see decodeDate). Errors of the last two kinds are *policyError.
func (c *Claims) UnmarshalJSON(b []byte) error {
	*c = Claims{}
	var runEnv map[string]any
	haveRunVars := false
	dup := func(name string) error {
		return &policyError{fmt.Sprintf("claim %q appears twice; build and sign the token again with each claim once", clip(name))}
	}
	d := json.NewDecoder(bytes.NewReader(b))
	err := decodeObject(d, "claims", dup, func(name string) error {
		var err error
		switch name {
		case "etchaRunVars":
			haveRunVars = true
			err = d.Decode(&c.RunVars)
		case "etchaRunEnv":
			err = d.Decode(&runEnv)
		default:
			err = c.decodeClaim(d, name)
		}
		var pe *policyError
		if errors.As(err, &pe) {
			return &policyError{fmt.Sprintf("claim %s: %s", name, pe.msg)}
		}
		if err != nil {
			return fmt.Errorf("claim %s: %w", clip(name), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("data after the claims object")
	}
	if !haveRunVars {
		c.RunVars = runEnv
	}
	return nil
}

// decodeClaim decodes the next value of d as the claim name.
func (c *Claims) decodeClaim(d *json.Decoder, name string) error {
	switch name {
	case "aud":
		var a audience
		err := d.Decode(&a)
		c.Audience = a
		return err
	case "exp":
		return decodeDate(d, &c.ExpiresAt)
	case "iat":
		return decodeDate(d, &c.IssuedAt)
	case "nbf":
		return decodeDate(d, &c.NotBefore)
	case "iss":
		return d.Decode(&c.Issuer)
	case "jti":
		return d.Decode(&c.ID)
	case "sub":
		return d.Decode(&c.Subject)
	case "etchaBuildManifest":
		return d.Decode(&c.BuildManifest)
	case "etchaPattern":
		return d.Decode(&c.Pattern)
	case "etchaVersion":
		return d.Decode(&c.Version)
	case "etchaCache":
		return d.Decode(&c.Cache)
	}
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return err
	}
	v, err := decodeValue(raw)
	if err != nil {
		return err
	}
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra[name] = v
	return nil
}

// maxUnix is the largest unix time a time.Time holds without overflow:
// time.Unix wraps beyond it into the distant past.
const maxUnix = math.MaxInt64 - 62135596800 // seconds from year 1 to 1970

// decodeDate decodes a NumericDate: a JSON number of unix seconds, or
// null; a fraction is truncated. A string is refused, even one holding
// digits: encoding/json (and so jwt.NumericDate) would accept
// "1700000000", and another verifier might not, or might read it
// differently. A number outside the range of int64 seconds (or of
// time.Time, a little narrower) is refused with a *policyError: converted,
// it would wrap around, and an nbf far in the future would become a date
// long past (spec §11.13).
func decodeDate(d *json.Decoder, t *time.Time) error {
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return err
	}
	if string(raw) == "null" {
		*t = time.Time{}
		return nil
	}
	if len(raw) > 0 && raw[0] == '"' {
		return fmt.Errorf("must be a number of unix seconds, not a string")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return err
	}
	f, err := n.Float64()
	// -2^63 and 2^63 are exact as float64; NaN cannot come from JSON.
	if err != nil || f < math.MinInt64 || f >= 1<<63 || int64(f) > maxUnix {
		return &policyError{fmt.Sprintf("%s is outside the range of unix seconds; build and sign the token again with a real date", clip(string(raw)))}
	}
	*t = time.Unix(int64(f), 0)
	return nil
}

// policyError is a decoding error that carries its own fix, so the
// generic "three base64url parts" hint is not added to it.
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }

// Map returns the claims as the JSON object a verifier sees: the value
// jwtRule expressions run against and `etcha jwt` prints. Numbers with no
// fractional part become int64 (so exp, iat and nbf are unix seconds), other
// numbers float64; aud is always a list; the old etchaRunEnv appears as
// etchaRunVars. It fails only if RunVars, Cache or Extra hold values JSON
// cannot encode.
func (c *Claims) Map() (map[string]any, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode claims: %w", err)
	}
	v, err := decodeValue(b)
	if err != nil {
		return nil, fmt.Errorf("decode claims: %w", err)
	}
	m, _ := v.(map[string]any)
	return m, nil
}

// decodeValue decodes JSON with integral numbers as int64 and others as
// float64.
func decodeValue(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = convertNumbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = convertNumbers(e)
		}
	}
	return v
}

// Equal reports whether a and b are equal for pull purposes (spec §3.7):
// same etchaBuildManifest, same etchaPattern (a nil and an empty files map
// are equal) and, unless ignoreVersion, same etchaVersion. Other claims are
// not compared. Two nil claims are equal; nil and non-nil are not.
func Equal(a, b *Claims, ignoreVersion bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.BuildManifest == b.BuildManifest &&
		a.Pattern.Entrypoint == b.Pattern.Entrypoint &&
		maps.Equal(a.Pattern.Files, b.Pattern.Files) &&
		(ignoreVersion || a.Version == b.Version)
}

// GetExpirationTime implements jwt.Claims.
func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}

// GetIssuedAt implements jwt.Claims.
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(c.IssuedAt), nil }

// GetNotBefore implements jwt.Claims.
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error) { return numericDate(c.NotBefore), nil }

// GetIssuer implements jwt.Claims.
func (c *Claims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *Claims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *Claims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings(c.Audience), nil }
