// Package etcha implements the commands of the etcha CLI (spec §1.2) on top
// of the leaf packages: configuration loading (§1.1), generate-keys, build
// (§3.4), local, render, jwt, compare (§3.7), test (§7.1), lint (§7.2),
// run (listen mode, §4.2–4.5, §4.8 receiver, §11.9 etcd pull paths) and
// push (§4.8 sender).
//
// Each command is a method of App that writes its results to App.Stdout and
// returns an error; an *Error carries the exit code the binary should use.
// Nothing here calls os.Exit or reads os.Args, os.Stdout or the process
// environment directly: callers pass them in (the ETCD_* variables for
// etcd:/// pull paths come from App.Env).
//
// Run wires internal/source (the engine: verify, compare, diff, state, run
// queues), internal/pull (file, http(s) and etcd fetches, etcd watches) and
// internal/listen (the HTTPS push receiver) together; it owns their
// goroutines and the one etcd client.
//
// It deliberately does not implement events, webhooks, shell, the metrics
// endpoint, signingCommands or verifyCommands, PBKDF-encrypted keys, or
// container execs.
package etcha

import (
	"errors"
	"fmt"
)

// Error is an error with the exit code etcha should end with: 1 for a
// failure, 2 for a usage error. A nil Err means the command has already
// reported its outcome (for example `compare` printing "different") and
// nothing more is printed.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns the exit code.
func (e *Error) ExitCode() int { return e.Code }

// Usagef returns an exit-code-2 error for a bad command line.
func Usagef(format string, args ...any) error {
	return &Error{Code: 2, Err: fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is a usage error (exit code 2).
func IsUsage(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == 2
}

// exitSilently is the error of a command that printed its own outcome.
func exitSilently(code int) error { return &Error{Code: code} }
