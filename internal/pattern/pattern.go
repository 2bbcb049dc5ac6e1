// Package pattern loads, renders and validates Etcha patterns: Jsonnet
// files whose value describes build and run Command lists (spec §2.1).
//
// It collects a pattern and its imports into a Bundle (the JWT claim
// etchaPattern), renders a Bundle with an importer that sees only the
// bundle, provides the native functions of spec §5.1 (getConfig, getEnv,
// getFile, getCmd, getRecord, get, …) with build→run caching, merges vars
// (§5.3), gathers sysinfo (§5.4) and formats Jsonnet for lint. Patterns
// may `import 'etcha/native.libsonnet'` (NativeLibPath), a built-in
// library of wrappers that give the natives their documented default
// arguments; it is served from memory and never bundled.
//
// Renders reuse work that depends only on text: parsed bundles (by a hash
// of their files), decoded patterns (by a hash of the rendered JSON). Both
// caches are bounded and safe for concurrent use; natives run on every
// render.
//
// It does not run Commands (package command does), sign or verify JWTs,
// or read configuration files; callers pass the merged config and vars.
package pattern

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// Pattern is a rendered pattern (spec §2.1).
type Pattern struct {
	Audience    []string         `json:"audience,omitempty"`
	Build       command.Commands `json:"build,omitempty"`
	BuildExec   *command.Exec    `json:"buildExec,omitempty"`
	BuildOutput string           `json:"buildOutput,omitempty"`
	ExpiresIn   Duration         `json:"expiresIn,omitempty"`
	ID          string           `json:"id,omitempty"`
	Issuer      string           `json:"issuer,omitempty"`
	Run         command.Commands `json:"run,omitempty"`
	RunExec     *command.Exec    `json:"runExec,omitempty"`
	RunVars     map[string]any   `json:"runVars,omitempty"`
	Subject     string           `json:"subject,omitempty"`
}

// UnmarshalJSON decodes a pattern, accepting the older names runEnv (for
// runVars) and expiresInSec (integer seconds, for expiresIn), and a single
// string for audience (spec §9 #1, #2, #22).
func (p *Pattern) UnmarshalJSON(b []byte) error {
	type plain Pattern
	var raw struct {
		plain
		Audience     json.RawMessage `json:"audience"`
		ExpiresInSec *float64        `json:"expiresInSec"`
		RunEnv       map[string]any  `json:"runEnv"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*p = Pattern(raw.plain)
	aud, err := decodeAudience(raw.Audience)
	if err != nil {
		return err
	}
	p.Audience = aud
	if p.ExpiresIn == 0 && raw.ExpiresInSec != nil {
		p.ExpiresIn = Duration(time.Duration(*raw.ExpiresInSec * float64(time.Second)))
	}
	if p.RunVars == nil && raw.RunEnv != nil {
		p.RunVars = raw.RunEnv
	}
	return nil
}

func decodeAudience(b json.RawMessage) ([]string, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, errors.New("audience must be a string or a list of strings")
	}
	return list, nil
}

// Duration is a time.Duration that reads as a Go duration string ("1h",
// "10m") or a number of seconds, and writes as a duration string.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1h0m0s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string, "" (zero) or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
		*d = 0
	case float64:
		*d = Duration(time.Duration(v * float64(time.Second)))
	case string:
		if v == "" || v == "0" {
			*d = 0
			return nil
		}
		x, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("duration %q: use a value such as \"1h\" or \"10m\"", v)
		}
		*d = Duration(x)
	default:
		return fmt.Errorf("duration must be a string such as \"1h\", got %s", b)
	}
	return nil
}

// knownKeys are the pattern keys of spec §2.1 plus accepted old names.
var knownKeys = []string{
	"audience", "build", "buildExec", "buildOutput", "expiresIn", "expiresInSec",
	"id", "issuer", "run", "runEnv", "runExec", "runVars", "subject",
}

// decode turns rendered JSON into a validated Pattern. Unknown keys are
// ignored for forward compatibility, unless they look like a misspelling
// of a known key (spec §2.1).
func decode(out string) (*Pattern, error) {
	data := []byte(out)
	var keys map[string]ignored
	// null decodes into a nil map without error: refuse it explicitly.
	if err := json.Unmarshal(data, &keys); err != nil || keys == nil {
		return nil, fmt.Errorf("a pattern must be an object: %s; make the file evaluate to an object such as {run: [...]}", firstWord(out))
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	var p Pattern
	if err := p.UnmarshalJSON(data); err != nil {
		return nil, typeError(err)
	}
	if err := validate("build", p.Build); err != nil {
		return nil, err
	}
	if err := validate("run", p.Run); err != nil {
		return nil, err
	}
	return &p, nil
}

// typeError rewords encoding/json's type mismatch on a pattern key (its
// message names the internal decoding struct) as
// `key "id": got number, want string`.
func typeError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || errors.Unwrap(err) != nil {
		return err
	}
	field := strings.TrimPrefix(strings.ReplaceAll(te.Field, "plain.", ""), ".")
	return fmt.Errorf("key %q: got %s, want %s", field, te.Value, jsonKind(te.Type))
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

func validate(list string, cs command.Commands) error {
	if err := cs.Validate(); err != nil {
		return &listError{list: list, err: err}
	}
	return nil
}

// listError keeps a validation error (possibly several, joined) on one
// line, prefixed by the list name, while still unwrapping to it.
type listError struct {
	list string
	err  error
}

func (e *listError) Error() string {
	return e.list + ": " + strings.ReplaceAll(e.err.Error(), "\n", "; ")
}

func (e *listError) Unwrap() error { return e.err }

// ignored decodes any JSON value to nothing, without copying it (a
// json.RawMessage would): checkKeys needs only the names.
type ignored struct{}

func (*ignored) UnmarshalJSON([]byte) error { return nil }

func checkKeys(keys map[string]ignored) error {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if s := suggest(k); s != "" {
			return fmt.Errorf("unknown pattern key %q; did you mean %q?", k, s)
		}
	}
	return nil
}

// suggest returns the known key that k is probably a misspelling of, or ""
// when k is known or not close to any known key.
func suggest(k string) string {
	for _, known := range knownKeys {
		if k == known {
			return ""
		}
	}
	for _, known := range knownKeys {
		if strings.EqualFold(k, known) || (len(k) >= 4 && distance(k, known) <= 2) {
			return known
		}
	}
	return ""
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return "got " + strings.Join(strings.Fields(s), " ")
}
