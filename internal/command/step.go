package command

import (
	"context"
	"fmt"
	"maps"
)

// runCommand runs one non-group command under the decision rules of spec
// §2.5; by is the id that triggered it, "" if none.
func (r *runner) runCommand(ctx context.Context, cmd *Command, parent, by string) outcome {
	eff := r.commandExec(cmd)
	trig := by != ""
	hasCheck := cmd.Check != ""
	ck := 0
	if hasCheck {
		out, code, err := r.exec(ctx, cmd, eff, parent, ModeCheck, cmd.Check)
		if err != nil {
			r.fail(cmd.ID, fmt.Errorf("command %q: check: %w", cmd.ID, err))
			return outcome{failed: true}
		}
		ck = code
		if cmd.EnvPrefix != "" {
			r.vars[cmd.EnvPrefix] = out
		}
	}
	r.setVar(cmd, "_CHECK", flag((hasCheck && ck != 0) || (!hasCheck && (cmd.Always || trig))))
	switch r.mode {
	case ModeCheck:
		if hasCheck && ck != 0 {
			r.res.Changed = append(r.res.Changed, cmd.ID)
			r.log.Info("Would change "+cmd.ID, "commandID", cmd.ID, "commandMode", r.mode, "parentID", parent)
		}
		return outcome{}
	case ModeChange:
		if !cmd.Always && !trig && (!hasCheck || ck == 0) {
			return outcome{}
		}
		r.logStart(cmd, parent, by)
		return r.act(ctx, cmd, eff, parent, ModeChange, cmd.Change)
	default: // ModeRemove, ModeDiffRemove
		if !r.needsRemove(cmd, trig, ck) {
			return outcome{}
		}
		if cmd.Remove == "" {
			// Most commands (e.g. builds) have no remove: nothing to undo,
			// nothing to report.
			return outcome{}
		}
		r.logStart(cmd, parent, by)
		return r.act(ctx, cmd, eff, parent, ModeRemove, cmd.Remove)
	}
}

// needsRemove applies the remove-mode decision rules (spec §2.5) to cmd,
// whose check (if any) exited ck. In diff removal the check decides alone
// (§11.12): the command is being dropped, and a failing check says there
// is nothing left to remove, whether it is always or triggered; without a
// check it is removed unconditionally. In plain remove mode always and
// triggers force the removal (scenario S14).
func (r *runner) needsRemove(cmd *Command, trig bool, ck int) bool {
	hasCheck := cmd.Check != ""
	if r.mode == ModeDiffRemove {
		return !hasCheck || ck == 0
	}
	return cmd.Always || trig || (hasCheck && ck == 0)
}

// act runs the change (phase ModeChange) or remove (ModeRemove) script and
// records its variables and result. An empty change counts as a successful
// change without running anything (spec §2.5).
func (r *runner) act(ctx context.Context, cmd *Command, eff Exec, parent string, phase Mode, text string) outcome {
	suffix := "_CHANGE"
	if phase == ModeRemove {
		suffix = "_REMOVE"
	}
	var out string
	var code int
	var err error
	if text != "" {
		out, code, err = r.exec(ctx, cmd, eff, parent, phase, text)
	}
	r.setVar(cmd, suffix, flag(err != nil || code != 0))
	if cmd.EnvPrefix != "" {
		r.vars[cmd.EnvPrefix+suffix+"_OUT"] = out
	}
	// Changed and Removed list what ran, failed or not (spec §4.8).
	if phase == ModeRemove {
		r.res.Removed = append(r.res.Removed, cmd.ID)
	} else {
		r.res.Changed = append(r.res.Changed, cmd.ID)
	}
	switch {
	case err != nil:
		r.fail(cmd.ID, fmt.Errorf("command %q: %s: %w", cmd.ID, phase, err))
		return outcome{failed: true, output: out}
	case code != 0:
		r.fail(cmd.ID, exitError(cmd.ID, phase, code, out))
		return outcome{failed: true, output: out}
	case phase == ModeRemove:
		r.log.Info("Removed "+cmd.ID, "commandID", cmd.ID, "commandMode", r.mode, "parentID", parent)
		return outcome{removed: true, output: out}
	default:
		msg := "Changed "
		if cmd.Always {
			msg = "Always changed "
		}
		r.log.Info(msg+cmd.ID, "commandID", cmd.ID, "commandMode", r.mode, "parentID", parent)
		return outcome{changed: true, output: out}
	}
}

func (r *runner) logStart(cmd *Command, parent, by string) {
	if by != "" {
		r.log.Info("Triggered "+cmd.ID+" via "+by, "commandID", cmd.ID, "commandMode", r.mode, "parentID", parent)
	}
}

// exec runs one script of cmd and records it in Result.Outputs.
func (r *runner) exec(ctx context.Context, cmd *Command, eff Exec, parent string, phase Mode, text string) (string, int, error) {
	env := make(map[string]string, len(r.ctx)+len(r.vars))
	maps.Copy(env, r.ctx)
	maps.Copy(env, r.vars)
	s := script{text: text, stdin: cmd.Stdin, exec: eff, env: env, inherited: r.inh}
	out, code, err := s.run(ctx)
	r.res.Outputs = append(r.res.Outputs, Output{ID: cmd.ID, ParentID: parent, Phase: phase, Output: out, ExitCode: code})
	r.log.Debug("Ran "+string(phase), "commandID", cmd.ID, "commandMode", r.mode, "exitCode", code)
	return out, code, err
}

// commandExec applies the command's own exec layer (spec §2.9). Run has
// already refused container execs (checkExecs).
func (r *runner) commandExec(cmd *Command) Exec {
	eff, ok := overrideExec(r.base, cmd.Exec)
	if !ok {
		r.log.Warn("Ignoring the command exec of "+cmd.ID+": the outer exec chain (exec, sources.<name>.exec, runExec/buildExec) does not allow overrides; set allowOverride: true on each of them",
			"commandID", cmd.ID)
	}
	return eff
}

// checkExecs refuses, before anything runs, any command whose effective
// exec asks for a container, or whose own exec asks for one but is
// ignored because an outer exec forbids overrides.
func (r *runner) checkExecs(cmds Commands) error {
	for _, cmd := range cmds {
		if cmd.IsGroup() {
			if err := r.checkExecs(cmd.Commands); err != nil {
				return err
			}
			continue
		}
		eff, ok := overrideExec(r.base, cmd.Exec)
		if !ok {
			if err := refusedContainer(fmt.Sprintf("command %q exec", cmd.ID), "the outer exec chain", cmd.Exec); err != nil {
				return err
			}
		}
		if eff.ContainerImage != "" {
			return fmt.Errorf("command %q: containerImage %q: container execs are not supported yet; remove containerImage from the exec settings (exec, sources.<name>.exec, runExec/buildExec or the command's exec); nothing was run",
				cmd.ID, eff.ContainerImage)
		}
	}
	return nil
}

// setVar sets P<suffix>, or the bare suffix when the command has no
// envPrefix (spec §2.7).
func (r *runner) setVar(cmd *Command, suffix, v string) {
	r.vars[cmd.EnvPrefix+suffix] = v
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// exitError reports a script's non-zero exit, with its output when there
// is any.
func exitError(id string, phase Mode, code int, out string) error {
	if out == "" {
		return fmt.Errorf("command %q: %s exited with status %d (no output)", id, phase, code)
	}
	return fmt.Errorf("command %q: %s exited with status %d: %s", id, phase, code, abbrev(out))
}

// abbrev shortens script output for error messages.
func abbrev(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
