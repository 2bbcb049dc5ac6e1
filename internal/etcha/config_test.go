package etcha

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadConfigPrecedence(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "c.jsonnet", `{vars: {a: 'file', b: 'file', c: 'file', d: 'file'}}`)
	env := []string{"etcha_vars_b=env", "etcha_vars_c=env", "ETCHA_vars_d=upper", "PATH=/bin"}
	x := []string{"vars_c=x", "vars_n=5", "vars_o={\"k\": [1, true]}", "vars_s=not json"}
	c, err := LoadConfig(context.Background(), LoadOptions{Path: cfg, Env: env, Overrides: x})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": "file", "b": "env", "c": "x", "d": "file", // upper-case ETCHA_ is not read (spec §1.1)
		"n": float64(5), "o": map[string]any{"k": []any{float64(1), true}}, "s": "not json",
	}
	if got := c.Vars; !reflect.DeepEqual(got, want) {
		t.Fatalf("vars = %#v, want %#v", got, want)
	}
}

func TestLoadConfigSearch(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, DefaultConfigName, `{run: {jwtRule: 'iss == "found"'}}`)
	deep := filepath.Join(root, "a", "b")
	writeFile(t, deep, "x", "")
	c, err := LoadConfig(context.Background(), LoadOptions{Dir: deep})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Run.JWTRule, `iss == "found"`; got != want {
		t.Fatalf("jwtRule = %q, want %q", got, want)
	}
	c, err = LoadConfig(context.Background(), LoadOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != "" || len(c.Raw) != 0 {
		t.Fatalf("without a config file got Path %q, Raw %v; want none", c.Path, c.Raw)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		x         []string
		want      string
		usage     bool
	}{
		{name: "malformed jsonnet", cfg: "{\n  run: {,\n}", want: "c.jsonnet:2:"},
		{name: "not an object", cfg: "[1]", want: "must evaluate to an object"},
		{name: "wrong type", cfg: "{run: {verifyKeys: 5}}", want: "verifyKeys"},
		{name: "exec field type", cfg: "{exec: {sudo: 'y'}}", want: "config exec.sudo: got a JSON string where a boolean belongs"},
		{name: "private key as verify key", cfg: "{run: {verifyKeys: ['" + testPrivateKey + "']}}", want: `config run.verifyKeys[0]: ed25519private key "lAASVe7woP" is a private key`},
		{name: "verify key typo", cfg: "{run: {verifyKeys: ['" + testPublicKey + "', 'ed25519publc:AAAA']}}", want: `config run.verifyKeys[1]: unknown key type`},
		{name: "source verify key typo", cfg: "{sources: {a: {}, web: {verifyKeys: 'ed25519public:AAAAAAAAAAAA:k'}}}", want: `config sources.web.verifyKeys[0]: ed25519public key "k": not a PKIX DER public key`},
		{name: "bad rule", cfg: "{run: {jwtRule: 'iss ==='}}", want: "run.jwtRule"},
		{name: "bad exclude", cfg: "{lint: {exclude: '('}}", want: "lint.exclude"},
		{name: "bad override", cfg: "{}", x: []string{"novalue"}, want: "key=value", usage: true},
		{name: "missing file", want: "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.jsonnet")
			if tc.cfg != "" {
				writeFile(t, filepath.Dir(p), "c.jsonnet", tc.cfg)
			}
			_, err := LoadConfig(context.Background(), LoadOptions{Path: p, Overrides: tc.x})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig() = %v, want an error containing %q", err, tc.want)
			}
			if got := IsUsage(err); got != tc.usage {
				t.Fatalf("IsUsage(%v) = %v, want %v", err, got, tc.usage)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "Go struct") || strings.Contains(err.Error(), "MC4CAQAw") {
				t.Fatalf("error is not one line or shows Go internals: %q", err)
			}
		})
	}
}

func TestSigningKeyPathSearchedUpward(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "signing.key", testPrivateKey+"\n")
	deep := filepath.Join(dir, "x", "y")
	writeFile(t, deep, "keep", "")
	t.Chdir(deep)
	a, _ := newApp(t, `{build: {signingKeyPath: 'signing.key'}}`)
	k, err := a.signingKey()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.Public().String(), testPublicKey; got != want {
		t.Fatalf("key = %s, want %s", got, want)
	}
}

func TestLoadConfigJSON(t *testing.T) {
	p := writeFile(t, t.TempDir(), "etcha.json", `{"run": {"verifyKeys": "`+testPublicKey+`", "maxJWTSize": 2048}}`)
	c, err := LoadConfig(context.Background(), LoadOptions{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(c.Run.VerifyKeys, ","), testPublicKey; got != want {
		t.Fatalf("verifyKeys = %q, want %q", got, want)
	}
	if got, want := c.Run.MaxJWTSize, 2048; got != want {
		t.Fatalf("maxJWTSize = %d, want %d", got, want)
	}
}
