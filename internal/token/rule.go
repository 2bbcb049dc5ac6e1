package token

import (
	"fmt"

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
//     'b']})`. An absent aud is an empty list and an absent etchaCache an
//     empty map; other absent claims and unknown names are nil (so
//     `exp != nil && exp - iat <= 86400` works). The rule must return true:
//     false → ReasonRule; a compile or run error → ReasonRule wrapping it.
//  2. etchaPattern.entrypoint must be non-empty and a key of
//     etchaPattern.files, else ReasonNoEntrypoint.
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
	ep := c.Pattern.Entrypoint // (2)
	if ep == "" {
		return refuse(ReasonNoEntrypoint, nil, "jwt has no etchaPattern entrypoint; build it with etcha build")
	}
	if _, ok := c.Pattern.Files[ep]; !ok {
		return refuse(ReasonNoEntrypoint, nil, "jwt etchaPattern entrypoint %q is not among its files; build it again with etcha build", clip(ep))
	}
	return nil
}

func evalRule(c *Claims, rule string) error {
	prog, err := compileRule(rule)
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
