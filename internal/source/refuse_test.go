package source

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// Every value the table refuses: nothing runs, the current pattern
// is kept (and stays saved), the reason is reported.
func TestRefusals(t *testing.T) {
	v := newEnv(t)
	const rule = `iss == 'tests'`
	e := v.engine(Options{JWTRule: "false", MaxSize: 64 << 10}, // the source's rule replaces run's "false"
		Config{Name: "app", JWTRule: rule})
	good := v.sign(logPattern("good"))
	if r := receive(t, e, "app", good, push); r.Status != StatusRan || v.log() != "good" {
		t.Fatalf("first pattern: status %s, err %v, log %q", r.Status, r.Err, v.log())
	}

	otherPriv, _, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	newer := v.sign(logPattern("bad"))
	header, payload, _ := strings.Cut(newer, ".")
	payload, _, _ = strings.Cut(payload, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	hs256, err := jwt.NewWithClaims(jwt.SigningMethodHS256, v.claims(logPattern("bad"))).SignedString([]byte(v.pub.String()))
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() string {
		raw, _ := base64.RawURLEncoding.DecodeString(payload)
		raw = []byte(strings.Replace(string(raw), "echo bad", "echo evil", 1))
		sig := newer[strings.LastIndex(newer, ".")+1:]
		return header + "." + b64(raw) + "." + sig
	}()
	claimsWith := func(f func(c *token.Claims)) string {
		c := v.claims(logPattern("bad"))
		f(c)
		return v.signWith(c, v.priv)
	}
	older := func() string {
		c := v.claims(logPattern("bad"))
		c.IssuedAt = time.Now().Add(-3 * time.Hour)
		return v.signWith(c, v.priv)
	}()

	for _, tc := range []struct {
		name   string
		jwt    string
		reason token.Reason
	}{
		{"wrong key", v.signWith(v.claims(logPattern("bad")), otherPriv), token.ReasonSignature},
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload + ".", token.ReasonSignature},
		{"HS256", hs256, token.ReasonSignature},
		{"tampered", tampered, token.ReasonSignature},
		{"expired", claimsWith(func(c *token.Claims) { c.ExpiresAt = time.Now().Add(-time.Minute) }), token.ReasonExpired},
		{"nbf in the future", claimsWith(func(c *token.Claims) { c.NotBefore = time.Now().Add(time.Hour) }), token.ReasonNotYetValid},
		{"jwtRule false", claimsWith(func(c *token.Claims) { c.Issuer = "elsewhere" }), token.ReasonRule},
		{"older iat", older, ReasonRollback},
		{"does not render", claimsWith(func(c *token.Claims) { c.Pattern.Files["/main.jsonnet"] = "{run: [" }), ReasonRender},
		{"not a JWT", "hello, world", token.ReasonMalformed},
		{"empty", "", token.ReasonMalformed},
		{"binary garbage", "\x00\xff\xfe.\x01\x02.\x80", token.ReasonMalformed},
		{"too large", strings.Repeat("e", 65<<10), token.ReasonTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := receive(t, e, "app", tc.jwt, push)
			if r.Status != StatusRefused || r.Reason != tc.reason || r.Err == nil {
				t.Errorf("status %s, reason %q, err %v; want refused, %q", r.Status, r.Reason, r.Err, tc.reason)
			}
			if len(r.Outputs) != 0 || v.log() != "good" {
				t.Errorf("something ran: %d scripts, log %q", len(r.Outputs), v.log())
			}
			if cur, _ := e.Current("app"); cur != good {
				t.Error("the current pattern was replaced")
			}
			b, _ := json.Marshal(r)
			if !strings.Contains(string(b), `"err":`) {
				t.Errorf("Result JSON %s has no err", b)
			}
		})
	}
	// The current pattern was never replaced, so a tick still runs it,
	// and a restart restores it.
	if r := run(t, e, "app", Origin{Trigger: TriggerPull, Tick: true}); r.Status != StatusRan || v.log() != "good,good" {
		t.Errorf("tick after refusals: status %s, log %q", r.Status, v.log())
	}
	e2 := v.engine(Options{JWTRule: "false"}, Config{Name: "app", JWTRule: rule})
	if cur, _ := e2.Current("app"); cur != good {
		t.Error("restart did not restore the last accepted pattern")
	}
}

// allowRollback accepts an older, validly signed pattern.
func TestAllowRollback(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "app", AllowRollback: true})
	receive(t, e, "app", v.sign(logPattern("new")), push)
	c := v.claims(logPattern("old"))
	c.IssuedAt = time.Now().Add(-3 * time.Hour)
	r := receive(t, e, "app", v.signWith(c, v.priv), push)
	if r.Status != StatusRan || v.log() != "new,old" {
		t.Errorf("rollback with allowRollback: status %s, reason %q, log %q; want ran, new,old", r.Status, r.Reason, v.log())
	}
}

// A source's verifyKeys are added to run's, for that source only.
func TestSourceVerifyKeysAppended(t *testing.T) {
	v := newEnv(t)
	srcPriv, srcPub, err := token.GenerateKeys("ecp256")
	if err != nil {
		t.Fatal(err)
	}
	e := v.engine(Options{}, Config{Name: "a", VerifyKeys: token.PublicKeys{srcPub}}, Config{Name: "b"})
	byRun := v.sign(logPattern("run"))
	bySource := v.signWith(v.claims(logPattern("s")), srcPriv) // issued after byRun
	if r := receive(t, e, "a", byRun, push); r.Status != StatusRan {
		t.Errorf("a, signed by the run key: %s %v", r.Status, r.Err)
	}
	if r := receive(t, e, "a", bySource, push); r.Status != StatusRan || r.PublicKey != srcPub.ID {
		t.Errorf("a, signed by its own key: %s %v, public key %q want %q", r.Status, r.Err, r.PublicKey, srcPub.ID)
	}
	if r := receive(t, e, "b", bySource, push); r.Reason != token.ReasonSignature {
		t.Errorf("b, signed by a's key: %s %q, want refused for the signature", r.Status, r.Reason)
	}
}

// With no keys at all every JWT is refused.
func TestNoKeysRefusesAll(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{VerifyKeys: token.PublicKeys{}}, Config{Name: "app"})
	if r := receive(t, e, "app", v.sign(logPattern("a")), push); r.Reason != token.ReasonNoKeys || v.log() != "" {
		t.Errorf("no keys: status %s, reason %q, log %q", r.Status, r.Reason, v.log())
	}
}
