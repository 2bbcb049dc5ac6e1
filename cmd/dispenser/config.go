package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/dispenser-dev/dispenser/internal/supervisor"
	"github.com/dispenser-dev/dispenser/internal/token"
	"github.com/dispenser-dev/dispenser/internal/writer"
)

// config is everything the flags say. parseFlags fills it and checks each
// value, looking up users and groups and whether --target is a directory;
// it does not touch etcd or write anything.
type config struct {
	prefix      string         // etcd prefix, always ending in "/"
	target      string         // directory the files go to
	signal      syscall.Signal // sent to the child after a change; 0: none
	mode        fs.FileMode
	uid, gid    int                 // from --owner/--group; -1 keeps the process's own
	runAs       *syscall.Credential // --run-as: the child's user and groups; nil: dispenser's own
	layout      writer.Layout
	fsync       bool
	once        bool
	version     bool          // --version: print it and exit
	waitMin     time.Duration // 0: no debounce
	waitMax     time.Duration
	killTimeout time.Duration
	reap        bool
	embedded    string // data dir of the embedded etcd; "" when off
	embedListen string
	logFormat   string
	logLevel    string
	listenHTTP  string        // address of /metrics, /healthz, /readyz; "" when off
	watchProbe  time.Duration // progress-request interval; 0: off
	initTimeout time.Duration // give up if the first sync takes longer; 0: wait forever
	argv        []string      // the child; empty in sidecar mode

	patterns    string           // etcd prefix of pattern JWTs, ending in "/"; "" when off
	verifyKeys  token.PublicKeys // --verify-key, DISPENSER_VERIFY_KEYS, DISPENSER_VERIFY_KEYS_FILE
	stateDir    string           // --state-dir; "" keeps no state across restarts
	etchaConfig string           // --etcha-config file; "" when none
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := pflag.NewFlagSet("dispenser", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SetInterspersed(false) // the child's argv starts at the first non-flag
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: dispenser --prefix=/etcd/prefix --target=/dir [flags] [--] [command args...]\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\netcd connection: ETCD_ENDPOINTS, ETCD_USERNAME, ETCD_PASSWORD, ETCD_USERNAME_AND_PASSWORD,\nETCD_INSECURE_SKIP_VERIFY, ETCD_SERVER_CA, ETCD_CLIENT_CERT, ETCD_CLIENT_KEY (each also as NAME_FILE).\n"+
			"ETCD_AUTO_SYNC_INTERVAL (e.g. 5m): replace the endpoints with the members etcd advertises, this often (default: off).\n")
	}
	var (
		c                  config
		signal, mode, wait string
		layout             string
		owner, group       string
		runAs              string
		keyFlags           []string
	)
	fs.StringVarP(&c.prefix, "prefix", "p", "", "etcd prefix of all files to read (required)")
	fs.StringVarP(&c.target, "target", "t", "", "directory to write the files to (required)")
	fs.StringVarP(&signal, "signal", "s", "", "signal sent to the child after the files change, e.g. SIGHUP (default: none)")
	fs.StringVarP(&mode, "mode", "m", "0600", "mode of the written files, octal")
	fs.StringVarP(&owner, "owner", "o", "", "owner of the written files, name or uid (needs root; default: current user)")
	fs.StringVarP(&group, "group", "g", "", "group of the written files, name or gid (needs root; default: current group)")
	fs.StringVar(&runAs, "run-as", "", "run the child as `USER[:GROUP]` (names or ids) with the user's groups, or only GROUP; dispenser keeps root (needs root; default: dispenser's own user)")
	fs.StringVar(&layout, "layout", "atomic", "atomic: swap a ..data symlink per change set; plain: replace each file in place")
	fs.BoolVar(&c.fsync, "fsync", false, "fsync files and directories after writing")
	fs.BoolVar(&c.once, "once", false, "write the files once and exit (for init containers)")
	fs.StringVar(&wait, "wait", "", "MIN[:MAX]: wait for MIN of quiet (at most MAX, default 4*MIN) before writing and signalling")
	fs.DurationVar(&c.killTimeout, "kill-timeout", 10*time.Second, "after forwarding SIGTERM/SIGINT, wait this long for the child, then SIGKILL its process group; also how long processes the child leaves behind get after SIGTERM")
	fs.BoolVar(&c.reap, "reap", false, "reap orphaned zombie processes (always on as PID 1)")
	fs.StringVar(&c.embedded, "embedded-etcd", "", "start an in-process single-member etcd with its data in `DIR` (development only)")
	fs.StringVar(&c.embedListen, "embedded-etcd-listen", "127.0.0.1:2379", "client address of the embedded etcd")
	fs.StringVar(&c.listenHTTP, "listen-http", "", "serve /metrics, /healthz and /readyz on `ADDR`, e.g. 127.0.0.1:9090 (default: off)")
	fs.DurationVar(&c.watchProbe, "watch-probe", 30*time.Second, "ask etcd for a sign of life on the watch this often (a progress request; through etcd's grpc-proxy, which does not answer those, a one-key probe watch) and resync after two unanswered (0: off)")
	fs.DurationVar(&c.initTimeout, "initial-timeout", 0, "give up if the first complete sync takes longer than this (default: wait forever)")
	fs.StringVar(&c.patterns, "patterns", "", "run the signed pattern JWT in each key under this etcd `PREFIX`; the key's path below it is the pattern's name (needs a verify key)")
	fs.StringArrayVar(&keyFlags, "verify-key", nil, "public `KEY` (from etcha generate-keys) that pattern JWTs must be signed with; repeatable; also DISPENSER_VERIFY_KEYS (comma-separated) and DISPENSER_VERIFY_KEYS_FILE")
	fs.StringVar(&c.stateDir, "state-dir", "", "keep the last accepted JWT of each pattern in `DIR` (created if missing), so a restart restores them and can run removals (default: none)")
	fs.StringVar(&c.etchaConfig, "etcha-config", "", "etcha config `FILE` whose exec, vars, run.jwtRule and sources.<name> options apply to the patterns")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	c.argv = fs.Args()
	if c.version {
		return &c, nil
	}

	var err error
	if c.prefix == "" {
		return nil, usagef("--prefix is required, e.g. --prefix=/certificates")
	}
	if !strings.HasSuffix(c.prefix, "/") {
		c.prefix += "/" // "/certs" must not also match "/certs-old/x"
	}
	if c.target == "" {
		return nil, usagef("--target is required, e.g. --target=/config")
	}
	if fi, err := os.Stat(c.target); err == nil && !fi.IsDir() {
		return nil, usagef("--target %s is not a directory; point it at a directory (it is created if missing)", c.target)
	}
	c.uid, c.gid = -1, -1
	if owner != "" {
		if c.uid, err = writer.LookupUser(owner); err != nil {
			return nil, usageError{fmt.Errorf("--owner: %w", err)}
		}
	}
	if group != "" {
		if c.gid, err = writer.LookupGroup(group); err != nil {
			return nil, usageError{fmt.Errorf("--group: %w", err)}
		}
	}
	if runAs != "" {
		if c.runAs, err = parseRunAs(runAs, c.argv); err != nil {
			return nil, err
		}
	}
	if signal != "" {
		if c.signal, err = supervisor.ParseSignal(signal); err != nil {
			return nil, usageError{fmt.Errorf("--signal: %w", err)}
		}
	}
	if c.mode, err = parseMode(mode); err != nil {
		return nil, usageError{err}
	}
	if c.layout, err = writer.ParseLayout(layout); err != nil {
		return nil, usageError{fmt.Errorf("--layout: %w", err)}
	}
	if c.waitMin, c.waitMax, err = parseWait(wait); err != nil {
		return nil, usageError{err}
	}
	if c.killTimeout <= 0 {
		return nil, usagef("--kill-timeout must be positive, e.g. 10s")
	}
	if c.watchProbe < 0 || c.initTimeout < 0 {
		return nil, usagef("--watch-probe and --initial-timeout cannot be negative")
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, usagef("--log-format %q: use text or json", c.logFormat)
	}
	if err := c.parsePatterns(keyFlags); err != nil {
		return nil, err
	}
	if c.once && len(c.argv) > 0 {
		return nil, usagef("--once writes the files and exits; it cannot start %q", c.argv[0])
	}
	return &c, nil
}

// parsePatterns checks the pattern flags and reads the verify keys from
// the flags and the environment.
func (c *config) parsePatterns(keyFlags []string) error {
	if c.patterns == "" {
		if len(keyFlags) > 0 || c.stateDir != "" || c.etchaConfig != "" {
			return usagef("--verify-key, --state-dir and --etcha-config apply to patterns; add --patterns=PREFIX or drop them")
		}
		return nil
	}
	if !strings.HasSuffix(c.patterns, "/") {
		c.patterns += "/"
	}
	if strings.HasPrefix(c.prefix, c.patterns) || strings.HasPrefix(c.patterns, c.prefix) {
		return usagef("--patterns=%s and --prefix=%s overlap; use two separate prefixes, e.g. /app/files/ and /app/patterns/", c.patterns, c.prefix)
	}
	var err error
	add := func(where string, list []string) error {
		for i, s := range list {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			k, err := token.ParsePublicKey(s)
			if err != nil {
				return usagef("%s (key %d): %v; use a publicKey printed by `etcha generate-keys`", where, i+1, err)
			}
			c.verifyKeys = append(c.verifyKeys, k)
		}
		return nil
	}
	if err = add("--verify-key", keyFlags); err != nil {
		return err
	}
	if err = add("DISPENSER_VERIFY_KEYS", strings.Split(os.Getenv("DISPENSER_VERIFY_KEYS"), ",")); err != nil {
		return err
	}
	if path := os.Getenv("DISPENSER_VERIFY_KEYS_FILE"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return usagef("DISPENSER_VERIFY_KEYS_FILE: %v; point it at a file of public keys, one per line or comma-separated", err)
		}
		if err = add("DISPENSER_VERIFY_KEYS_FILE "+path, strings.FieldsFunc(string(b), func(r rune) bool { return r == ',' || r == '\n' })); err != nil {
			return err
		}
	}
	return nil
}

// parseRunAs looks up --run-as for a child given by argv.
func parseRunAs(spec string, argv []string) (*syscall.Credential, error) {
	if len(argv) == 0 {
		return nil, usagef("--run-as sets the child's user, but no command is given; add one after --, or drop --run-as")
	}
	cred, err := supervisor.LookupCredential(spec)
	if err != nil {
		return nil, usageError{fmt.Errorf("--run-as: %w", err)}
	}
	if uid := os.Geteuid(); uid != 0 {
		return nil, usagef("--run-as needs dispenser to run as root (it runs as uid %d); start it as root, or drop --run-as", uid)
	}
	return cred, nil
}

func parseMode(s string) (fs.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("--mode %q is not an octal file mode; use e.g. 0600 or 0644", s)
	}
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode, nil
}

func parseWait(s string) (min, max time.Duration, err error) {
	if s == "" {
		return 0, 0, nil
	}
	lo, hi, hasMax := strings.Cut(s, ":")
	bad := fmt.Errorf("--wait %q: use MIN or MIN:MAX durations, e.g. 2s or 2s:10s", s)
	if min, err = time.ParseDuration(lo); err != nil || min <= 0 {
		return 0, 0, bad
	}
	max = 4 * min
	if hasMax {
		if max, err = time.ParseDuration(hi); err != nil || max < min {
			return 0, 0, bad
		}
	}
	return min, max, nil
}
