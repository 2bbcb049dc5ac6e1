package token

import (
	"fmt"
	"path"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// ruleSchema is the typed environment jwtRule expressions are compiled
// against: the claim types of a token built by Etcha. Other names are
// allowed (they read extra claims, or nil when absent).
func ruleSchema() map[string]any {
	return map[string]any{
		"aud": []any{}, "exp": int64(0), "iat": int64(0), "nbf": int64(0),
		"iss": "", "jti": "", "sub": "",
		"etchaBuildManifest": "", "etchaVersion": "",
		"etchaPattern": map[string]any{}, "etchaRunVars": map[string]any{}, "etchaCache": map[string]any{},
	}
}

func compileRule(rule string) (*vm.Program, error) {
	return expr.Compile(rule, expr.Env(ruleSchema()), expr.AsBool(), expr.AllowUndefinedVariables())
}

// CheckClaims runs the checks that apply to every accepted token, also one
// taken from verifyCommands whose signature is not checked (spec §3.6 steps
// 4–5):
//
//  1. If rule is non-empty, it is compiled with expr-lang against the claim
//     types of an Etcha token (aud a list, exp/iat/nbf int64, iss/jti/sub
//     and etchaBuildManifest/etchaVersion strings, etchaPattern,
//     etchaRunVars and etchaCache maps) and run against Claims.Map(), each
//     claim a top-level identifier, for example `any(aud, {# in ['a',
//     'b']})`. An absent aud is an empty list, an absent etchaCache an
//     empty map and an absent iss, jti, sub, etchaBuildManifest or
//     etchaVersion ""; other absent claims and unknown names are nil (so
//     `exp != nil && exp - iat <= 86400` works). The rule must return true:
//     false → ReasonRule; a compile or run error → ReasonRule wrapping it.
//  2. No two etchaPattern.files keys may be the same path after
//     PatternPath, else ReasonMalformed.
//  3. etchaPattern.entrypoint must be non-empty and, after PatternPath, a
//     key of etchaPattern.files, else ReasonNoEntrypoint.
//
// Errors are *VerifyError.
func CheckClaims(c *Claims, rule string) error {
	if c == nil {
		return refuse(ReasonMalformed, nil, "no claims; %s", malformedHint)
	}
	if rule != "" { // (1)
		if err := evalRule(c, rule); err != nil {
			return err
		}
	}
	return checkPattern(c.Pattern) // (2), (3)
}

// PatternPath returns the etchaPattern path p in normal form: slash-cleaned
// and "/"-prefixed ("main.jsonnet" and "/x/../main.jsonnet" are both
// "/main.jsonnet"). It is the rule pattern.NormalPath applies when
// rendering a bundle; the two must agree.
func PatternPath(p string) string {
	return path.Clean("/" + p)
}

// checkPattern refuses an etchaPattern whose file keys collide after
// PatternPath (the rendered text would depend on map order) or whose
// entrypoint is missing or not among the files.
func checkPattern(p Pattern) error {
	seen := make(map[string]string, len(p.Files))
	for k := range p.Files {
		n := PatternPath(k)
		if prev, ok := seen[n]; ok {
			a, b := prev, k
			if b < a {
				a, b = b, a
			}
			return refuse(ReasonMalformed, nil, "jwt etchaPattern files %q and %q are the same path %s; build it again with etcha build", clip(a), clip(b), clip(n))
		}
		seen[n] = k
	}
	ep := p.Entrypoint
	if ep == "" {
		return refuse(ReasonNoEntrypoint, nil, "jwt has no etchaPattern entrypoint; build it with etcha build")
	}
	if _, ok := seen[PatternPath(ep)]; !ok {
		return refuse(ReasonNoEntrypoint, nil, "jwt etchaPattern entrypoint %q is not among its files; build it again with etcha build", clip(ep))
	}
	return nil
}

func evalRule(c *Claims, rule string) error {
	prog, err := compiledRule(rule)
	if err != nil {
		return refuse(ReasonRule, err, "jwtRule %q does not compile: %s; fix the jwtRule setting", rule, firstLine(err))
	}
	env, err := c.Map()
	if err != nil {
		return refuse(ReasonRule, err, "jwtRule: %s; check etchaRunVars and etchaCache", firstLine(err))
	}
	if _, ok := env["aud"]; !ok {
		env["aud"] = []any{}
	}
	if _, ok := env["etchaCache"]; !ok {
		env["etchaCache"] = map[string]any{}
	}
	// The rule was compiled with these names typed as strings; a nil would
	// fail at run time with a Go type-conversion error instead of false.
	for _, name := range []string{"iss", "jti", "sub", "etchaBuildManifest", "etchaVersion"} {
		if _, ok := env[name].(string); !ok {
			env[name] = ""
		}
	}
	out, err := expr.Run(prog, env)
	if err != nil {
		return refuse(ReasonRule, err, "jwtRule %q failed on this jwt: %s; fix the rule or the jwt's claims", rule, firstLine(err))
	}
	if ok, _ := out.(bool); !ok {
		return refuse(ReasonRule, nil, "jwt refused by jwtRule %q; build a jwt whose claims satisfy the rule, or change the rule", rule)
	}
	return nil
}

// ValidateRule reports whether rule compiles as a jwtRule, for checking
// configuration at load time; Verify compiles it the same way. An empty rule
// is valid.
func ValidateRule(rule string) error {
	if rule == "" {
		return nil
	}
	if _, err := compileRule(rule); err != nil {
		return fmt.Errorf("jwtRule %q: %s; write an expr-lang expression returning a bool", rule, firstLine(err))
	}
	return nil
}
