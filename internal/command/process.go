package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultPath is the PATH given to scripts when the environment is not
// inherited and exec.env sets none, so that plain command names resolve.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// waitDelay bounds how long a finished script's output pipe may stay open
// (held by a backgrounded grandchild such as a started daemon) before it is
// closed and the script counts as finished.
const waitDelay = 2 * time.Second

// script is one process to start: a check, change or remove script.
type script struct {
	text  string            // the script, before ${VAR} expansion
	stdin string            // before expansion
	exec  Exec              // effective exec
	env   map[string]string // Etcha-added variables (context + accumulated)
	// inherited is the environment ("k=v") taken when exec.envInherit.
	inherited []string
}

// environ returns the script's full environment (spec §2.7, §2.9): the
// inherited env (Options.Environ) when exec.envInherit, then exec.env, then
// the Etcha-added variables; later sources win. PATH defaults to
// defaultPath when none of them sets it.
func (s script) environ() map[string]string {
	env := make(map[string]string)
	if s.exec.EnvInherit {
		for _, kv := range s.inherited {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	for k, v := range s.exec.Env {
		env[k] = v
	}
	for k, v := range s.env {
		env[k] = v
	}
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = defaultPath
	}
	return env
}

var varRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand replaces each ${NAME} whose NAME is defined in env (spec §2.8).
// Undefined names, $NAME and ${NAME:-x} are left for the shell, and so are
// the names in outsideInput: their values come from outside the signed
// pattern, and pasting them into the script would let an HTTP client write
// shell code. The shell still expands ${ETCHA_WEBHOOK_QUERY} from the
// environment, as a value, never as code.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if v, ok := env[name]; ok && !outsideInput(name) {
			return v
		}
		return m
	})
}

// outsideInput reports whether the variable name carries input that no
// signing key vouches for: a webhook request (method, path, query, headers,
// body, all chosen by whoever reaches the listener) or the output of the
// command that sent an event (which may print anything it read).
func outsideInput(name string) bool {
	return strings.HasPrefix(name, "ETCHA_WEBHOOK_") || name == "ETCHA_EVENT_OUTPUT"
}

// run starts the script and waits for it. It returns the combined, trimmed
// stdout+stderr and the exit code. err is non-nil only when the script could
// not run to an exit status: bad exec settings, start failure, or ctx done
// (then code is -1). A non-zero exit is not an error here.
func (s script) run(ctx context.Context) (out string, code int, err error) {
	env := s.environ()
	cmd, err := s.command(ctx, env, expand(s.text, env))
	if err != nil {
		return "", -1, err
	}
	if s.stdin != "" {
		cmd.Stdin = strings.NewReader(expand(s.stdin, env))
	}
	buf := &capBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = buf, buf // one writer: one pipe, arrival order
	code, err = exitCode(ctx, runOwned(cmd))
	return buf.String(), code, err
}

// command builds the process that runs text (already expanded) under
// s.exec with the environment env: argv, user and group, working
// directory, and its own process group, killed when ctx is done.
func (s script) command(ctx context.Context, env map[string]string, text string) (*exec.Cmd, error) {
	if s.exec.ContainerImage != "" {
		return nil, errors.New("exec.containerImage is not supported yet; remove it from the exec settings")
	}
	args, err := argv(s.exec, text, os.Geteuid())
	if err != nil {
		return nil, err
	}
	return newCmd(ctx, s.exec, env, args)
}

// newCmd builds the process args under e with the environment env: user
// and group, working directory, and its own process group, killed when
// ctx is done.
func newCmd(ctx context.Context, e Exec, env map[string]string, args []string) (*exec.Cmd, error) {
	cred, err := credential(e.User, e.Group)
	if err != nil {
		return nil, err
	}
	if e.WorkDir != "" {
		// Checked here because a failed chdir in the child is reported as
		// "fork/exec <interpreter>: no such file or directory".
		if fi, err := os.Stat(e.WorkDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("exec.workDir %q is not a directory; create it or change workDir", e.WorkDir)
		}
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = flatEnv(env)
	cmd.Dir = e.WorkDir
	// Own process group, so cancellation also kills the script's children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	return cmd, nil
}

// StartHook wraps the start of a process that this package runs and waits
// for itself. It calls start, which starts the process and returns its pid,
// and returns release, which the package calls once it has waited for the
// process (its exit status collected); release is not called when start or
// the hook fails.
//
// It exists for a process that also reaps children it did not start (a
// container's PID 1 reaping orphans, see supervisor.Owned): such a reaper
// must leave these processes to their owner, or the owner loses their exit
// status. Reaping is a property of the whole process, so the hook is
// process-wide too.
type StartHook func(start func() (pid int, err error)) (release func(), err error)

var startHook atomic.Pointer[StartHook]

// SetStartHook makes every process this package starts from now on (scripts
// and Capture) start through h; nil removes the hook. Set it once at
// start-up, before any process runs: a process already running is not
// covered.
func SetStartHook(h StartHook) {
	if h == nil {
		startHook.Store(nil)
		return
	}
	startHook.Store(&h)
}

// runOwned is cmd.Run, through the StartHook when one is set.
func runOwned(cmd *exec.Cmd) error {
	release, err := startOwned(cmd)
	if err != nil {
		return err
	}
	defer release()
	return cmd.Wait()
}

// startOwned is cmd.Start, through the StartHook when one is set. The
// caller calls release once cmd.Wait has returned.
func startOwned(cmd *exec.Cmd) (release func(), err error) {
	h := startHook.Load()
	if h == nil {
		return func() {}, cmd.Start()
	}
	return (*h)(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
}

// exitCode interprets the result err of Cmd.Run: the exit code, or -1 and
// an error when the process did not run to an exit status.
func exitCode(ctx context.Context, err error) (int, error) {
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case ctx.Err() != nil:
		return -1, fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	case errors.Is(err, exec.ErrWaitDelay):
		return 0, nil // exited 0; a background child kept the pipe
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		return exitErr.ExitCode(), nil
	default:
		return -1, err
	}
}

// maxStderr caps the stderr Output keeps for its error message.
const maxStderr = 64 << 10

// Capture runs text once under the effective exec e exactly as a command's
// check, change or remove script runs (spec §2.9, §11.14): the same argv
// (e.Command's words plus text as one argument, or text's own words when
// e.Command is empty; "sudo -E" first when e.Sudo and the euid is not 0),
// e.User and e.Group, e.WorkDir, the environment (environ when
// e.EnvInherit, then e.Env, then env; PATH defaulted), and its own
// process group, killed when ctx is done. Unlike a command script, text is
// not ${VAR}-expanded and gets no stdin; a container exec is refused.
//
// It returns stdout, trimmed. A non-zero exit, a failure to start, stdout
// over 16 MiB or ctx done is an error; it carries the trimmed stderr when
// there is any. Jsonnet natives that run programs (getCmd) use it.
func Capture(ctx context.Context, e Exec, text string, env map[string]string, environ []string) (string, error) {
	s := script{text: text, exec: e, env: env, inherited: environ}
	cmd, err := s.command(ctx, s.environ(), text)
	if err != nil {
		return "", err
	}
	stdout, stderr := &capBuffer{max: maxOutput}, &capBuffer{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	code, err := exitCode(ctx, runOwned(cmd))
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d", code)
	}
	if err == nil && stdout.dropped > 0 {
		err = fmt.Errorf("stdout is larger than %d bytes; print less", maxOutput)
	}
	if err != nil {
		if msg := stderr.String(); msg != "" {
			err = fmt.Errorf("%w: %s", err, strings.ReplaceAll(abbrev(msg), "\n", " "))
		}
		return "", err
	}
	return stdout.String(), nil
}

// maxOutput caps the output kept per script, so a runaway script cannot
// exhaust memory.
const maxOutput = 16 << 20

// capBuffer keeps the first max bytes written to it and counts the rest.
type capBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *capBuffer) Write(p []byte) (int, error) {
	keep := min(len(p), max(b.max-b.buf.Len(), 0))
	b.buf.Write(p[:keep])
	b.dropped += int64(len(p) - keep)
	return len(p), nil
}

// String returns the trimmed output, with a note when bytes were dropped.
func (b *capBuffer) String() string {
	out := strings.TrimSpace(b.buf.String())
	if b.dropped > 0 {
		out += fmt.Sprintf("\n[output truncated: %d bytes dropped]", b.dropped)
	}
	return out
}

func flatEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// credential resolves exec.user and exec.group (names or numeric ids) into
// a process credential, or nil when both are empty. A user without a group
// runs with the user's primary group and supplementary groups; a numeric
// user unknown to the system then needs an explicit group.
func credential(userName, groupName string) (*syscall.Credential, error) {
	if userName == "" && groupName == "" {
		return nil, nil
	}
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if userName != "" {
		u, uid, err := lookupUser(userName)
		if err != nil {
			return nil, err
		}
		cred.Uid = uid
		switch {
		case u != nil:
			gid, err := strconv.ParseUint(u.Gid, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("exec.user %q: primary group %q is not numeric", userName, u.Gid)
			}
			cred.Gid = uint32(gid)
			cred.Groups = supplementary(u)
		case groupName == "":
			return nil, fmt.Errorf("exec.user %q has no passwd entry; set exec.group too", userName)
		}
	}
	if groupName != "" {
		gid, err := lookupGroup(groupName)
		if err != nil {
			return nil, err
		}
		cred.Gid = gid
	}
	return cred, nil
}

// lookupUser resolves a name or numeric uid. u is nil for a numeric uid
// without a passwd entry.
func lookupUser(name string) (*user.User, uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			return nil, uint32(n), nil
		}
		return u, uint32(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, fmt.Errorf("exec.user %q: %w; use an existing user name or a numeric uid", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, 0, fmt.Errorf("exec.user %q: uid %q is not numeric", name, u.Uid)
	}
	return u, uint32(uid), nil
}

func lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("exec.group %q: %w; use an existing group name or a numeric gid", name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("exec.group %q: gid %q is not numeric", name, g.Gid)
	}
	return uint32(gid), nil
}

// supplementary returns u's supplementary group ids; on lookup failure it
// returns an empty list, which drops the caller's groups rather than keep
// them.
func supplementary(u *user.User) []uint32 {
	ids, err := u.GroupIds()
	out := []uint32{}
	if err != nil {
		return out
	}
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}
