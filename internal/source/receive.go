package source

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// Receive hands the source a pattern JWT that arrived from o (a pull, a
// push). The procedure (spec §3.6, §3.7, §4.3, §4.4, §4.8, §11.10):
//
//  1. Verify it with Options.VerifyKeys followed by the source's keys, the
//     source's jwtRule (else Options.JWTRule) and the size limit. A
//     refusal is logged with its reason and returned as StatusRefused;
//     nothing runs and the current pattern is kept.
//  2. Wait for the source's queue (unless runMulti).
//  3. A JWT equal to the current one (§3.7, pullIgnoreVersion) does
//     nothing (StatusUnchanged), except on a tick, which runs the
//     current pattern again (no diff).
//  4. A JWT older (iat) than the current one is refused with
//     ReasonRollback unless allowRollback. A missing iat is older than
//     any.
//  5. Render it; a render error refuses it with ReasonRender.
//  6. With o.Check, run it in check mode and stop: it is not made
//     current, saved or diffed. A triggerOnly source runs nothing
//     (StatusSkipped).
//  7. Diff the current run list against the new one (command.Diff),
//     unless noRemove, checkOnly or triggerOnly (then nothing is
//     removed); make the new pattern current; save the JWT to
//     <stateDir>/<source>.jwt unless noRestore (a failed save is logged;
//     the pattern is current anyway).
//  8. triggerOnly: stop (StatusStored).
//  9. Run: removals before in diff-removal mode with the old exec; the
//     new pattern in change mode (check mode if checkOnly); if that had
//     no error, removals after (removeAfter). StatusRan.
//
// The returned error is non-nil only when the JWT was not considered at
// all: an unknown source (*UnknownSourceError), ErrClosed, or ctx ending
// while queued or rendering. Result.Err holds refusals and run failures.
func (e *Engine) Receive(ctx context.Context, name, jwt string, o Origin) (Result, error) {
	s, err := e.enter(name)
	if err != nil {
		return Result{}, err
	}
	defer e.calls.Done()
	r, err := e.receive(ctx, s, jwt, o)
	if err != nil {
		return Result{}, err
	}
	e.report(s, r)
	return r, nil
}

func (e *Engine) receive(ctx context.Context, s *src, jwt string, o Origin) (Result, error) {
	r := Result{Source: s.cfg.Name, Origin: o, Mode: command.ModeChange}
	claims, key, err := token.Verify(jwt, e.verifyOptions(s.cfg)) // (1)
	if err != nil {
		return e.refuse(r, token.ReasonOf(err), fmt.Errorf("jwt for source %s refused: %w", s.cfg.Name, err)), nil
	}
	r.PublicKey, r.IssuedAt, r.JTI = key.ID, claims.IssuedAt, claims.ID
	jwt = strings.TrimSpace(jwt)      // as verified; a pulled file often ends in a newline
	release, err := e.acquire(ctx, s) // (2)
	if err != nil {
		return Result{}, err
	}
	defer release()
	ctx, cancel := e.runContext(ctx)
	defer cancel()

	s.mu.Lock()
	cur, verdict := e.judge(s, claims) // (3, 4)
	s.mu.Unlock()
	switch {
	case verdict == same && o.Tick && !o.Check:
		return e.runCurrent(ctx, s, cur, r), nil
	case verdict == same && !o.Check:
		e.log.Info("No changes for "+s.cfg.Name+": the pattern is the current one", "source", s.cfg.Name,
			"trigger", o.Trigger, "where", o.Where, "jti", claims.ID)
		r.Status = StatusUnchanged
		return r, nil
	case verdict == older:
		return e.refuse(r, ReasonRollback, rollbackError(s.cfg.Name, claims, cur)), nil
	}
	if o.Check && s.cfg.TriggerOnly {
		r.Status = StatusSkipped // (6) triggerOnly: no commands run on a push, checks included
		return r, nil
	}
	p, err := e.opts.Renderer.Render(ctx, s.cfg.Name, claims, jwt) // (5)
	if err != nil && ctx.Err() != nil {
		return Result{}, fmt.Errorf("render pattern of source %s: %w", s.cfg.Name, context.Cause(ctx))
	}
	if err != nil {
		return e.refuse(r, ReasonRender, fmt.Errorf("pattern of source %s does not render: %w", s.cfg.Name, err)), nil
	}
	if o.Check { // (6)
		r.Mode = command.ModeCheck
		r.Status = StatusRan
		e.runPhases(ctx, s, &r, nil, nil, nil, p)
		return r, nil
	}
	next := &current{jwt: jwt, claims: claims, key: key.ID, pattern: p}
	old, before, after, verdict := e.swap(s, next, o) // (7)
	switch verdict {
	case same:
		r.Status = StatusUnchanged // a concurrent runMulti call stored it first
		return r, nil
	case older:
		return e.refuse(r, ReasonRollback, rollbackError(s.cfg.Name, claims, old)), nil
	}
	if s.cfg.TriggerOnly { // (8)
		r.Status = StatusStored
		return r, nil
	}
	if s.cfg.CheckOnly { // (9)
		r.Mode = command.ModeCheck
	}
	r.Status = StatusRan
	var oldExec command.Exec
	if old != nil {
		oldExec = old.pattern.Exec
	}
	e.runPhases(ctx, s, &r, before, after, &oldExec, p)
	return r, nil
}

// verdict is how a verified JWT compares with the current pattern.
type verdict int

const (
	newer verdict = iota // different and not older: take it
	same                 // equal for pull purposes (spec §3.7)
	older                // different and older, without allowRollback
)

// judge compares claims with the source's current pattern. It needs s.mu.
func (e *Engine) judge(s *src, claims *token.Claims) (*current, verdict) {
	cur := s.cur
	switch {
	case cur == nil || cur.claims == nil: // none, or static commands
		return cur, newer
	case token.Equal(cur.claims, claims, s.cfg.PullIgnoreVersion):
		return cur, same
	case !s.cfg.AllowRollback && claims.IssuedAt.Before(cur.claims.IssuedAt):
		return cur, older
	}
	return cur, newer
}

// swap makes next current if it still judges newer, saves it, and returns
// the previous pattern with the diff removals to run.
func (e *Engine) swap(s *src, next *current, o Origin) (old *current, before, after command.Commands, v verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, v = e.judge(s, next.claims)
	if v != newer {
		return old, nil, nil, v
	}
	e.log.Info("Updating config for "+s.cfg.Name, "source", s.cfg.Name, "trigger", o.Trigger, "where", o.Where, "jti", next.claims.ID,
		"iat", next.claims.IssuedAt.UTC().Format(time.RFC3339), "publicKey", next.key)
	if old != nil && !s.cfg.NoRemove && !s.cfg.CheckOnly && !s.cfg.TriggerOnly {
		before, after = command.Diff(old.pattern.Run, next.pattern.Run)
	}
	s.cur = next
	if !s.cfg.NoRestore {
		if err := e.save(s.cfg.Name, next.jwt); err != nil {
			e.log.Error("Pattern not saved; a restart will not restore it", "source", s.cfg.Name, "err", err)
		}
	}
	return old, before, after, newer
}

func rollbackError(name string, claims *token.Claims, cur *current) error {
	return fmt.Errorf("jwt for source %s refused: issued at %s, before the current pattern's %s (a replay of an old pattern?); sign a new one, or set allowRollback on the source",
		name, claims.IssuedAt.UTC().Format(time.RFC3339), cur.claims.IssuedAt.UTC().Format(time.RFC3339))
}

func (e *Engine) refuse(r Result, reason token.Reason, err error) Result {
	r.Status, r.Reason, r.Err = StatusRefused, reason, err
	e.log.Warn("Pattern refused", "source", r.Source, "trigger", r.Origin.Trigger, "where", r.Origin.Where,
		"reason", reason, "err", err)
	return r
}

func (e *Engine) verifyOptions(c Config) token.VerifyOptions {
	rule := e.opts.JWTRule
	if c.JWTRule != "" {
		rule = c.JWTRule
	}
	keys := append(append(token.PublicKeys{}, e.opts.VerifyKeys...), c.VerifyKeys...)
	return token.VerifyOptions{Keys: keys, JWTRule: rule, Now: e.opts.Now, MaxSize: e.opts.MaxSize}
}

// Run runs the source's current pattern again, with no diff: at start-up,
// on a runFrequency tick whose pull brought nothing new, or for an event
// or webhook (spec §4.2 steps 4–5, §4.6). It runs in check mode if the
// source is checkOnly or o.Check. It does nothing (StatusSkipped) when
// there is no current pattern, or for a triggerOnly source unless
// o.Trigger is TriggerEvent or TriggerWebhook. Runs queue like Receive;
// the error is as for Receive.
func (e *Engine) Run(ctx context.Context, name string, o Origin) (Result, error) {
	s, err := e.enter(name)
	if err != nil {
		return Result{}, err
	}
	defer e.calls.Done()
	release, err := e.acquire(ctx, s)
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := e.runContext(ctx)
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	r := e.runCurrent(ctx, s, cur, Result{Source: name, Origin: o, Mode: command.ModeChange})
	cancel()
	release()
	e.report(s, r)
	return r, nil
}

// runCurrent runs cur with no diff.
func (e *Engine) runCurrent(ctx context.Context, s *src, cur *current, r Result) Result {
	trig := r.Origin.Trigger
	if cur == nil || (s.cfg.TriggerOnly && trig != TriggerEvent && trig != TriggerWebhook) {
		r.Status = StatusSkipped
		return r
	}
	r.PublicKey = cur.key
	if cur.claims != nil {
		r.IssuedAt, r.JTI = cur.claims.IssuedAt, cur.claims.ID
	}
	if s.cfg.CheckOnly || r.Origin.Check {
		r.Mode = command.ModeCheck
	}
	r.Status = StatusRan
	e.runPhases(ctx, s, &r, nil, nil, nil, cur.pattern)
	return r
}

// runPhases runs the removals before (with oldExec), p in r.Mode, and, if
// that succeeded, the removals after (spec §4.4), collecting into r.
func (e *Engine) runPhases(ctx context.Context, s *src, r *Result, before, after command.Commands, oldExec *command.Exec, p Pattern) {
	log := e.log.With("source", s.cfg.Name)
	cmdLog := e.cmdLog.With("source", s.cfg.Name)
	env := map[string]string{"ETCHA_SOURCE_NAME": s.cfg.Name}
	if r.Origin.Trigger != "" {
		env["ETCHA_SOURCE_TRIGGER"] = string(r.Origin.Trigger)
	}
	for k, v := range r.Origin.Env {
		env[k] = v
	}
	opts := func(mode command.Mode, exec command.Exec, parents []string) command.Options {
		return command.Options{Mode: mode, Exec: exec, Env: env, Environ: e.opts.Environ, ParentIDs: parents, Logger: cmdLog}
	}
	if len(before) > 0 {
		r.add(before.Run(ctx, opts(command.ModeDiffRemove, *oldExec, nil)))
	}
	main := p.Run.Run(ctx, opts(r.Mode, p.Exec, r.Origin.ParentIDs))
	r.add(main)
	switch {
	case len(after) > 0 && main.Err == nil:
		r.add(after.Run(ctx, opts(command.ModeDiffRemove, *oldExec, nil)))
	case len(after) > 0:
		log.Warn("Removals after the change skipped: the change run failed, so the old commands stay", "commands", len(after))
	}
	level := slog.LevelInfo
	if r.Err != nil {
		level = slog.LevelError
	}
	log.Log(ctx, level, "Ran source "+s.cfg.Name, "trigger", r.Origin.Trigger, "where", r.Origin.Where,
		"mode", r.Mode, "changed", len(r.Changed), "removed", len(r.Removed), "err", r.Err)
}
