package token

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from golden (run go test -update if intended):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestGolden pins the token the documented key produces for fixed claims
// (Ed25519 signatures are deterministic) and the claims map a verifier sees.
func TestGolden(t *testing.T) {
	priv, pub := docKeys(t)
	tok := mustSign(t, testClaims(), priv)
	golden(t, "token.jwt", []byte(tok+"\n"))

	stored, err := os.ReadFile(filepath.Join("testdata", "token.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	c, key, err := Verify(string(stored), opts(pub))
	if err != nil {
		t.Fatalf("Verify(golden token) = %v", err)
	}
	if got, want := key.ID, "lAASVe7woP"; got != want {
		t.Fatalf("verifying key ID = %q, want %q", got, want)
	}
	m, err := c.Map()
	if err != nil {
		t.Fatalf("Map = %v", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "claims.json", append(b, '\n'))
}

func TestMapTypes(t *testing.T) {
	c := testClaims()
	c.Audience = nil
	c.Cache = nil
	c.RunVars = map[string]any{"ratio": 0.5, "n": 3}
	m, err := c.Map()
	if err != nil {
		t.Fatalf("Map = %v", err)
	}
	for k, want := range map[string]any{
		"exp":          fixedNow().Add(time.Hour).Unix(),
		"iat":          fixedNow().Add(-time.Hour).Unix(),
		"etchaRunVars": map[string]any{"ratio": 0.5, "n": int64(3)},
		"etchaVersion": "v2026.11.0",
	} {
		if got := m[k]; !reflect.DeepEqual(got, want) {
			t.Fatalf("Map()[%q] = %#v, want %#v", k, got, want)
		}
	}
	for _, k := range []string{"aud", "etchaCache", "etchaRunEnv"} {
		if _, ok := m[k]; ok {
			t.Fatalf("Map() has %q, want it omitted", k)
		}
	}
	empty, err := (&Claims{}).Map()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(empty)
	if got, want := string(b), `{"etchaBuildManifest":"","etchaPattern":{"entrypoint":"","files":{}},"etchaRunVars":{},"etchaVersion":""}`; got != want {
		t.Fatalf("empty claims = %s, want %s", got, want)
	}
}

// TestOlderTokenShapes checks tokens as older Etcha versions wrote them: aud
// as a single string and run vars under etchaRunEnv.
func TestOlderTokenShapes(t *testing.T) {
	priv, pub := docKeys(t)
	now := fixedNow()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"aud":                "audience!",
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"etchaBuildManifest": "",
		"etchaPattern":       map[string]any{"entrypoint": "/main.jsonnet", "files": map[string]string{"/main.jsonnet": "{}"}},
		"etchaRunEnv":        map[string]any{"hello": "world"},
		"etchaVersion":       "v2024.02.0",
		"custom":             []any{"x", 1.5},
	}).SignedString(priv.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Verify(tok, opts(pub))
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if got, want := strings.Join(c.Audience, ","), "audience!"; got != want {
		t.Fatalf("Audience = %q, want %q", got, want)
	}
	if got, want := c.RunVars["hello"], "world"; got != want {
		t.Fatalf("RunVars[hello] = %v, want %v (from etchaRunEnv)", got, want)
	}
	if got, want := c.Extra["custom"], []any{"x", 1.5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Extra[custom] = %#v, want %#v", got, want)
	}
	o := opts(pub)
	o.JWTRule = `aud == ['audience!'] && etchaRunVars.hello == 'world' && custom[0] == 'x'`
	if _, _, err := Verify(tok, o); err != nil {
		t.Fatalf("Verify with rule = %v", err)
	}

	var both Claims
	if err := json.Unmarshal([]byte(`{"etchaRunVars":{"a":1},"etchaRunEnv":{"b":2}}`), &both); err != nil {
		t.Fatal(err)
	}
	if _, ok := both.RunVars["a"]; !ok || len(both.RunVars) != 1 {
		t.Fatalf("RunVars = %v, want etchaRunVars to win over etchaRunEnv", both.RunVars)
	}
	if err := json.Unmarshal([]byte(`{"aud":5}`), &both); err == nil {
		t.Fatalf("Unmarshal(aud 5) = nil, want an error")
	}
}

func TestExtraClaimsRoundTrip(t *testing.T) {
	priv, pub := docKeys(t)
	c := testClaims()
	c.Extra = map[string]any{"team": "ops", "sub": "ignored: known claim"}
	got, _, err := Verify(mustSign(t, c, priv), opts(pub))
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if got.Extra["team"] != "ops" || got.Subject != "app" || len(got.Extra) != 1 {
		t.Fatalf("Extra = %v, Subject = %q; want team=ops only and sub unchanged", got.Extra, got.Subject)
	}
}

func TestEqual(t *testing.T) {
	base := testClaims()
	for _, tc := range []struct {
		name          string
		change        func(*Claims)
		ignoreVersion bool
		want          bool
	}{
		{"identical", func(*Claims) {}, false, true},
		{"times, jti, aud, run vars differ", func(c *Claims) {
			c.IssuedAt, c.ExpiresAt, c.NotBefore = time.Time{}, time.Time{}, time.Time{}
			c.ID, c.Audience, c.RunVars, c.Cache = "other", nil, nil, nil
		}, false, true},
		{"manifest differs", func(c *Claims) { c.BuildManifest += "x" }, false, false},
		{"entrypoint differs", func(c *Claims) { c.Pattern.Entrypoint = "/other.jsonnet" }, false, false},
		{"file content differs", func(c *Claims) { c.Pattern.Files["/patterns/app.jsonnet"] += " " }, false, false},
		{"extra file", func(c *Claims) { c.Pattern.Files["/x"] = "" }, false, false},
		{"version differs", func(c *Claims) { c.Version = "v2027" }, false, false},
		{"version differs, ignored", func(c *Claims) { c.Version = "v2027" }, true, true},
		{"version ignored, manifest differs", func(c *Claims) { c.Version, c.BuildManifest = "v2027", "" }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := testClaims()
			tc.change(other)
			if got := Equal(base, other, tc.ignoreVersion); got != tc.want {
				t.Fatalf("Equal = %v, want %v", got, tc.want)
			}
			if got := Equal(other, base, tc.ignoreVersion); got != tc.want {
				t.Fatalf("Equal (swapped) = %v, want %v", got, tc.want)
			}
		})
	}
	if !Equal(&Claims{}, &Claims{Pattern: Pattern{Files: map[string]string{}}}, false) {
		t.Fatalf("nil and empty files compare unequal")
	}
	if Equal(nil, base, false) || !Equal(nil, nil, false) {
		t.Fatalf("Equal with nil claims is wrong")
	}
}

func TestUnmarshalClaims(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(*Claims) bool
		wantErr  string
	}{
		{"fractional exp truncated to seconds", `{"exp":1795345200.5}`, func(c *Claims) bool {
			return c.ExpiresAt.Equal(time.Unix(1795345200, 0))
		}, ""},
		{"null exp", `{"exp":null,"iss":null}`, func(c *Claims) bool { return c.ExpiresAt.IsZero() && c.Issuer == "" }, ""},
		{"names are case-sensitive", `{"ETCHAVERSION":"v1"}`, func(c *Claims) bool {
			return c.Version == "" && c.Extra["ETCHAVERSION"] == "v1"
		}, ""},
		{"repeated claim", `{"sub":"a","sub":"b"}`, nil, `claim "sub" appears twice; build and sign the token again with each claim once`},
		{"repeated unknown claim", `{"x":1,"y":2,"x":1}`, nil, `claim "x" appears twice`},
		{"repeated claim, escaped name", `{"exp":1,"\u0065xp":2}`, nil, `claim "exp" appears twice`},
		{"etchaRunEnv beside etchaRunVars", `{"etchaRunEnv":{"a":1},"etchaRunVars":{"b":2}}`, func(c *Claims) bool { return c.RunVars["b"] == 2.0 && c.RunVars["a"] == nil }, ""},
		{"largest exp", `{"exp":9223371974719179007}`, func(c *Claims) bool { return c.ExpiresAt.Year() > 1<<30 }, ""},
		{"negative nbf", `{"nbf":-1e10}`, func(c *Claims) bool { return c.NotBefore.Year() == 1653 }, ""},
		{"exp past int64", `{"exp":9223372036854775808}`, nil, "claim exp: 9223372036854775808 is outside the range of unix seconds; build and sign the token again with a real date"},
		{"nbf wrapping to the past", `{"nbf":9223372036854775000}`, nil, "claim nbf: 9223372036854775000 is outside the range of unix seconds"},
		{"iat below int64", `{"iat":-1e19}`, nil, "claim iat: -1e19 is outside the range"},
		{"exp beyond float64", `{"exp":1e400}`, nil, "claim exp: 1e400 is outside the range"},
		{"extra numbers", `{"n":3,"f":0.25}`, func(c *Claims) bool { return c.Extra["n"] == int64(3) && c.Extra["f"] == 0.25 }, ""},
		{"not an object", `["aud"]`, nil, "claims must be a JSON object"},
		{"trailing data", `{"sub":"a"} {}`, nil, "data after the claims object"},
		{"bad exp", `{"exp":"tomorrow"}`, nil, "claim exp"},
		{"numeric string exp", `{"exp":"1795345200"}`, nil, "claim exp: must be a number of unix seconds, not a string"},
		{"numeric string nbf", `{"nbf":"1"}`, nil, "claim nbf: must be a number of unix seconds, not a string"},
		{"numeric string iat", `{"iat":"1"}`, nil, "claim iat: must be a number"},
		{"object exp", `{"exp":{}}`, nil, "claim exp"},
		{"bad pattern", `{"etchaPattern":{"files":["x"]}}`, nil, "claim etchaPattern"},
		{"bad aud", `{"aud":[1]}`, nil, "aud must be a string or a list of strings"},
		{"null pattern", `{"etchaPattern":null}`, func(c *Claims) bool { return c.Pattern.Entrypoint == "" && c.Pattern.Files == nil }, ""},
		{"pattern unknown key ignored", `{"etchaPattern":{"entrypoint":"/m","files":{"/m":"{}"},"x":1}}`, func(c *Claims) bool {
			return c.Pattern.Entrypoint == "/m" && c.Pattern.Files["/m"] == "{}"
		}, ""},
		{"duplicate files key", `{"etchaPattern":{"entrypoint":"/m","files":{"/m":"{}","/m":"{run: []}"}}}`, nil, `claim etchaPattern: files has the key "/m" twice`},
		{"duplicate entrypoint key", `{"etchaPattern":{"entrypoint":"/a","files":{},"entrypoint":"/b"}}`, nil, `etchaPattern has the key "entrypoint" twice`},
		{"duplicate etchaPattern claim", `{"etchaPattern":{"entrypoint":"/a"},"etchaPattern":{"entrypoint":"/b"}}`, nil, `claim "etchaPattern" appears twice`},
		{"file not a string", `{"etchaPattern":{"files":{"/m":5}}}`, nil, `file "/m"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Claims
			err := c.UnmarshalJSON([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("UnmarshalJSON(%s) = %v, want error containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalJSON(%s) = %v", tc.in, err)
			}
			if !tc.check(&c) {
				t.Fatalf("UnmarshalJSON(%s) = %+v", tc.in, c)
			}
		})
	}
}
