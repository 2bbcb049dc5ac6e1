package etcha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/listen"
	"github.com/dispenser-dev/dispenser/internal/pattern"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// DefaultConfigName is the config file looked for, upward from the working
// directory, when no -c is given (spec §1.1).
const DefaultConfigName = "etcha.jsonnet"

// EnvPrefix starts the environment variables that override config keys,
// e.g. etcha_build_signingKey (spec §1.1).
const EnvPrefix = "etcha_"

// Config is the part of Etcha's configuration the CLI commands use. Keys
// it does not know are kept in Raw (for getConfig()) and otherwise ignored.
type Config struct {
	Build      BuildConfig              `json:"build"`
	Exec       *command.Exec            `json:"exec,omitempty"`
	HTTPClient HTTPClientConfig         `json:"httpClient"`
	HTTPServer HTTPServerConfig         `json:"httpServer"`
	Lint       LintConfig               `json:"lint"`
	Run        RunConfig                `json:"run"`
	Sources    map[string]*SourceConfig `json:"sources,omitempty"`
	Targets    map[string]*TargetConfig `json:"targets,omitempty"`
	Vars       map[string]any           `json:"vars,omitempty"`

	// Raw is the whole merged configuration, for getConfig() (spec §5.2).
	Raw map[string]any `json:"-"`
	// Path is the config file read, "" if none.
	Path string `json:"-"`
}

// BuildConfig holds build.* keys.
type BuildConfig struct {
	// SigningKey is a private key in Etcha form.
	SigningKey string `json:"signingKey,omitempty"`
	// SigningKeyPath names a file holding the key; a bare file name is
	// searched upward from the working directory.
	SigningKeyPath string `json:"signingKeyPath,omitempty"`
	// PushDomainSuffix is appended to every target's hostname by push.
	PushDomainSuffix string `json:"pushDomainSuffix,omitempty"`
	// PushMaxWorkers bounds how many targets push sends to at once; 0
	// means the number of CPUs.
	PushMaxWorkers int `json:"pushMaxWorkers,omitempty"`
}

// TargetConfig holds the targets.<name>.* keys that push uses (spec §4.1).
type TargetConfig struct {
	// Hostname defaults to the target's name.
	Hostname string `json:"hostname,omitempty"`
	// Insecure pushes over http instead of https.
	Insecure bool `json:"insecure,omitempty"`
	// PathPush defaults to "/etcha/v1/push".
	PathPush string `json:"pathPush,omitempty"`
	// PathShell defaults to "/etcha/v1/shell".
	PathShell string `json:"pathShell,omitempty"`
	// Port defaults to 4000; a number or a string of digits.
	Port portValue `json:"port,omitempty"`
	// SourcePatterns maps a source name to the pattern path or command
	// pushed to it when the command line gives none; "" accepts only
	// what the command line gives.
	SourcePatterns map[string]string `json:"sourcePatterns,omitempty"`
	// TLSSkipVerify accepts any certificate from this target (not an Etcha
	// key; httpClient.tlsSkipVerify does the same for every target).
	TLSSkipVerify bool `json:"tlsSkipVerify,omitempty"`
	// Vars are the target vars a pushed pattern is rendered with.
	Vars map[string]any `json:"vars,omitempty"`
}

// RunConfig holds run.* keys.
type RunConfig struct {
	VerifyKeys stringList `json:"verifyKeys,omitempty"`
	JWTRule    string     `json:"jwtRule,omitempty"`
	// MaxJWTSize is the largest JWT, in bytes, that jwt, render and
	// compare accept; 0 means 1 MiB. Not an Etcha key.
	MaxJWTSize int `json:"maxJWTSize,omitempty"`
	// StateDir holds <source>.jwt, the last accepted JWT of each source
	// (spec §4.5); "" means the working directory.
	StateDir string `json:"stateDir,omitempty"`
	// RandomizedStartDelaySec: `etcha run` first sleeps a random time up
	// to this many seconds.
	RandomizedStartDelaySec int `json:"randomizedStartDelaySec,omitempty"`
	// TimeoutPush bounds the run a push starts; 0 means 10m.
	TimeoutPush pattern.Duration `json:"timeoutPush,omitempty"`
	// TimeoutWebhook bounds a webhook's runs (then 504, commands
	// killed); TimeoutShell a shell session. 0 means 10m.
	TimeoutWebhook pattern.Duration `json:"timeoutWebhook,omitempty"`
	TimeoutShell   pattern.Duration `json:"timeoutShell,omitempty"`
	// SystemMetricsKey enables GET /etcha/v1/system/metrics?key=<key>;
	// "" disables it (404).
	SystemMetricsKey string `json:"systemMetricsKey,omitempty"`
}

// HTTPClientConfig holds httpClient.* keys, for pulls and pushes.
type HTTPClientConfig struct {
	// TLSSkipVerify accepts any certificate on https pulls and pushes.
	TLSSkipVerify bool `json:"tlsSkipVerify,omitempty"`
}

// HTTPServerConfig holds httpServer.* keys, for `etcha run`'s listener.
type HTTPServerConfig struct {
	// ListenAddress defaults to ":4000".
	ListenAddress        string `json:"listenAddress,omitempty"`
	TLSCertificatePath   string `json:"tlsCertificatePath,omitempty"`
	TLSKeyPath           string `json:"tlsKeyPath,omitempty"`
	TLSCertificateBase64 string `json:"tlsCertificateBase64,omitempty"`
	TLSKeyBase64         string `json:"tlsKeyBase64,omitempty"`
	// RateLimitRate limits requests per client address; "" means off.
	RateLimitRate string `json:"rateLimitRate,omitempty"`
}

// LintConfig holds lint.* keys.
type LintConfig struct {
	// Exclude is a regexp of paths lint and test skip; nil means the
	// default "etcha.jsonnet", "" excludes nothing.
	Exclude *string `json:"exclude,omitempty"`
	// Linters are external linters fed each command's scripts on stdin.
	// Default: none.
	Linters map[string]*command.Exec `json:"linters,omitempty"`
}

// SourceConfig holds the sources.<name>.* keys (spec §4.1).
type SourceConfig struct {
	AllowPush         bool             `json:"allowPush,omitempty"`
	AllowRollback     bool             `json:"allowRollback,omitempty"`
	CheckOnly         bool             `json:"checkOnly,omitempty"`
	Commands          command.Commands `json:"commands,omitempty"`
	EventsReceive     []string         `json:"eventsReceive,omitempty"`
	EventsSend        string           `json:"eventsSend,omitempty"`
	Exec              *command.Exec    `json:"exec,omitempty"`
	JWTRule           string           `json:"jwtRule,omitempty"`
	NoRemove          bool             `json:"noRemove,omitempty"`
	NoRestore         bool             `json:"noRestore,omitempty"`
	PullIgnoreVersion bool             `json:"pullIgnoreVersion,omitempty"`
	PullPaths         []string         `json:"pullPaths,omitempty"`
	RunFrequency      pattern.Duration `json:"runFrequency,omitempty"`
	RunMulti          bool             `json:"runMulti,omitempty"`
	// Shell is the exec of `etcha shell` sessions; a command enables
	// them.
	Shell       *command.Exec  `json:"shell,omitempty"`
	TriggerOnly bool           `json:"triggerOnly,omitempty"`
	Vars        map[string]any `json:"vars,omitempty"`
	VerifyKeys  stringList     `json:"verifyKeys,omitempty"`
	// WebhookPaths are the exact request paths this source answers.
	WebhookPaths []string `json:"webhookPaths,omitempty"`
}

// LoadOptions say where configuration comes from.
type LoadOptions struct {
	// Path is the -c config file; "" looks for DefaultConfigName upward
	// from Dir and uses no file if there is none. A file found that way is
	// used only if it is a regular file owned by the effective user or
	// root and not writable by group or others; others are skipped with a
	// warning (their native functions would run commands).
	Path string
	// Dir is the directory the search starts in; "" means the working
	// directory.
	Dir string
	// Env is the process environment ("k=v"); etcha_* entries override
	// config keys, and getEnv in a Jsonnet config reads it.
	Env []string
	// Overrides are -x key=value arguments, applied last.
	Overrides []string
	// NoExternal is -d: native functions that reach outside fail.
	NoExternal bool
	// Home ends the upward search for DefaultConfigName: its parents are
	// not searched. "" means HOME from Env, else the user's home
	// directory; outside it the search goes up to the filesystem root.
	Home string
	// Logger receives warnings, e.g. about a found config file that is
	// skipped because someone else could have written it. Nil discards.
	Logger *slog.Logger
}

// LoadConfig reads the configuration, in order of precedence (later wins):
// the config file (rendered as Jsonnet), etcha_* environment variables, then
// -x overrides (spec §1.1). Override keys join nested keys with "_"; values
// are parsed as JSON when possible, else taken as strings.
func LoadConfig(ctx context.Context, opts LoadOptions) (*Config, error) {
	raw := map[string]any{}
	path, err := configPath(opts)
	if err != nil {
		return nil, err
	}
	if path != "" {
		if raw, err = readConfigFile(ctx, path, opts); err != nil {
			return nil, err
		}
	}
	for _, kv := range opts.Env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) && len(k) > len(EnvPrefix) {
			setPath(raw, strings.TrimPrefix(k, EnvPrefix), v)
		}
	}
	for _, kv := range opts.Overrides {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, Usagef("-x %q is not key=value; write it like -x run_jwtRule='iss == \"me\"'", kv)
		}
		setPath(raw, k, v)
	}
	c, err := decodeConfig(raw)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

func configPath(opts LoadOptions) (string, error) {
	if opts.Path != "" {
		return opts.Path, nil
	}
	dir := opts.Dir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("find config: %w", err)
		}
		dir = wd
	}
	p, err := newSearch(opts.Home, opts.Env, opts.Logger).find(dir, DefaultConfigName)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find config: %w; pass the config file with -c", err)
	}
	return p, nil
}

func readConfigFile(ctx context.Context, path string, opts LoadOptions) (map[string]any, error) {
	b, err := pattern.Load(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w; fix the config file or pass another with -c", err)
	}
	out, err := b.Evaluate(ctx, pattern.Options{Env: envMap(opts.Env), NoExternal: opts.NoExternal})
	if err != nil {
		return nil, fmt.Errorf("config %s: %w; fix the config file", path, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("config %s: the file must evaluate to an object; wrap the settings in { }", path)
	}
	return raw, nil
}

// setPath sets raw[a][b]... for the "_"-joined key a_b_..., replacing any
// non-object on the way.
func setPath(raw map[string]any, key, value string) {
	parts := strings.Split(key, "_")
	m := raw
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = parseValue(value)
}

// parseValue returns value decoded as JSON, or as a string if it is not.
func parseValue(value string) any {
	var v any
	if err := json.Unmarshal([]byte(value), &v); err == nil {
		return v
	}
	return value
}

func decodeConfig(raw map[string]any) (*Config, error) {
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("config %s: got a JSON %s where a %s belongs; fix that key's value", te.Field, te.Value, goKind(te.Type.Kind()))
		}
		return nil, fmt.Errorf("config: %w; fix that key's value", err)
	}
	c.Raw = raw
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the values that can be checked without using them:
// jwtRule expressions compile, verifyKeys parse, lint.exclude compiles and
// run.maxJWTSize is not negative. Sources are checked in name order, so
// the error reported does not vary.
func (c *Config) Validate() error {
	if err := token.ValidateRule(c.Run.JWTRule); err != nil {
		return fmt.Errorf("config run.jwtRule: %w; fix the expression", err)
	}
	if _, err := parseKeys("run.verifyKeys", c.Run.VerifyKeys); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Sources)) {
		s := c.Sources[name]
		if s == nil {
			continue
		}
		if err := token.ValidateRule(s.JWTRule); err != nil {
			return fmt.Errorf("config sources.%s.jwtRule: %w; fix the expression", name, err)
		}
		if _, err := parseKeys("sources."+name+".verifyKeys", s.VerifyKeys); err != nil {
			return err
		}
		if err := s.Commands.Validate(); err != nil {
			return fmt.Errorf("config sources.%s.commands: %w", name, err)
		}
		if _, err := regexp.Compile(s.EventsSend); err != nil {
			return fmt.Errorf("config sources.%s.eventsSend %q: %v; fix the regular expression (\".*\" sends every event, \"\" none)", name, s.EventsSend, err)
		}
		for i, p := range s.WebhookPaths {
			if err := listen.CheckWebhookPath(p); err != nil {
				return fmt.Errorf("config sources.%s.webhookPaths[%d]: %w", name, i, err)
			}
		}
		if s.RunFrequency < 0 {
			return fmt.Errorf("config sources.%s.runFrequency is negative; use a duration such as \"5m\", or \"\" for start-up only", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Targets)) {
		if t := c.Targets[name]; t != nil && t.Port != "" {
			if n, err := strconv.Atoi(string(t.Port)); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("config targets.%s.port is %q; use a port number from 1 to 65535", name, string(t.Port))
			}
		}
	}
	if c.Build.PushMaxWorkers < 0 {
		return fmt.Errorf("config build.pushMaxWorkers is %d; use 1 or more, or 0 for the number of CPUs", c.Build.PushMaxWorkers)
	}
	if c.Run.RandomizedStartDelaySec < 0 {
		return fmt.Errorf("config run.randomizedStartDelaySec is %d; use 0 or more seconds", c.Run.RandomizedStartDelaySec)
	}
	if _, err := c.exclude(); err != nil {
		return err
	}
	if c.Run.MaxJWTSize < 0 {
		return fmt.Errorf("config run.maxJWTSize is %d; set a positive number of bytes or 0 for 1 MiB", c.Run.MaxJWTSize)
	}
	return nil
}

// exclude returns the compiled lint.exclude, or nil to exclude nothing.
func (c *Config) exclude() (*regexp.Regexp, error) {
	expr := DefaultConfigName
	if c.Lint.Exclude != nil {
		expr = *c.Lint.Exclude
	}
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("config lint.exclude: %w; fix the regular expression", err)
	}
	return re, nil
}

// source returns the named source; "" is the empty source.
func (c *Config) source(name string) (*SourceConfig, error) {
	if name == "" {
		return &SourceConfig{}, nil
	}
	s, ok := c.Sources[name]
	if !ok {
		return nil, fmt.Errorf("source %q is not configured; add sources.%s to the config or pick another with -s", name, name)
	}
	if s == nil {
		s = &SourceConfig{}
	}
	return s, nil
}

// verifyKeys parses run.verifyKeys followed by the source's verifyKeys.
// Validate has already parsed them, so errors here mean Config was not
// validated.
func (c *Config) verifyKeys(src *SourceConfig) (token.PublicKeys, error) {
	keys, err := parseKeys("run.verifyKeys", c.Run.VerifyKeys)
	if err != nil || src == nil {
		return keys, err
	}
	more, err := parseKeys("the source's verifyKeys", src.VerifyKeys)
	return append(keys, more...), err
}

// parseKeys parses a verifyKeys list; where names it in errors.
func parseKeys(where string, list []string) (token.PublicKeys, error) {
	keys := make(token.PublicKeys, 0, len(list))
	for i, s := range list {
		k, err := token.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("config %s[%d]: %w; use a publicKey printed by `etcha generate-keys`", where, i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// getConfig returns the object getConfig() shows patterns (spec §5.2):
// the raw config without secrets, with exec set to the effective exec.
func (c *Config) getConfig(exec command.Exec) map[string]any {
	out := make(map[string]any, len(c.Raw)+1)
	for k, v := range c.Raw {
		out[k] = v
	}
	if b, ok := out["build"].(map[string]any); ok {
		nb := make(map[string]any, len(b))
		for k, v := range b {
			if k != "signingKey" {
				nb[k] = v
			}
		}
		out["build"] = nb
	}
	var em map[string]any
	if b, err := json.Marshal(exec); err == nil {
		_ = json.Unmarshal(b, &em)
	}
	out["exec"] = em
	delete(out, "vars")
	return out
}

// goKind names the JSON kind a Go kind decodes from.
func goKind(k reflect.Kind) string {
	switch k {
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "object"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// stringList is a list of strings that also decodes from one string, so
// -x run_verifyKeys=ed25519public:... works without JSON quoting.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = stringList{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("verifyKeys must be a key string or a list of key strings")
	}
	*l = list
	return nil
}

// portValue is a port given as a JSON number or string; Validate checks
// that it is a number from 1 to 65535.
type portValue string

func (p *portValue) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = portValue(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("a target's port must be a number or a string of digits")
	}
	*p = portValue(n.String())
	return nil
}
