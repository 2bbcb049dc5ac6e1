package token

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
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
// seconds on the wire; sub-second parts are truncated when signing.
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

// audience decodes from a string or a list of strings and encodes as a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("aud must be a string or a list of strings")
	}
	*a = l
	return nil
}

// wireClaims is the JSON shape of Claims. Field order is alphabetical, so
// encoded payloads are stable.
type wireClaims struct {
	Audience      audience         `json:"aud,omitempty"`
	BuildManifest string           `json:"etchaBuildManifest"`
	Cache         map[string]any   `json:"etchaCache,omitempty"`
	Pattern       Pattern          `json:"etchaPattern"`
	RunEnv        map[string]any   `json:"etchaRunEnv,omitempty"` // decode only
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

func fromNumericDate(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// MarshalJSON encodes the claims as a JWT payload.
func (c Claims) MarshalJSON() ([]byte, error) {
	w := wireClaims{
		Audience:      audience(c.Audience),
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

// UnmarshalJSON decodes a JWT payload. It fails on claims of the wrong JSON
// type (for example a numeric etchaVersion).
func (c *Claims) UnmarshalJSON(b []byte) error {
	var w wireClaims
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	*c = Claims{
		Audience:      []string(w.Audience),
		ExpiresAt:     fromNumericDate(w.ExpiresAt),
		IssuedAt:      fromNumericDate(w.IssuedAt),
		NotBefore:     fromNumericDate(w.NotBefore),
		Issuer:        w.Issuer,
		ID:            w.ID,
		Subject:       w.Subject,
		BuildManifest: w.BuildManifest,
		Pattern:       w.Pattern,
		RunVars:       w.RunVars,
		Version:       w.Version,
		Cache:         w.Cache,
	}
	if _, ok := all["etchaRunVars"]; !ok && w.RunEnv != nil {
		c.RunVars = w.RunEnv
	}
	for k, raw := range all {
		if isKnownClaim(k) {
			continue
		}
		v, err := decodeValue(raw)
		if err != nil {
			return fmt.Errorf("claim %s: %w", k, err)
		}
		if c.Extra == nil {
			c.Extra = map[string]any{}
		}
		c.Extra[k] = v
	}
	return nil
}

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
