package command

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
)

// Mode selects what Run does with each command (spec §2.5).
type Mode string

// Modes. The zero Mode is ModeChange.
const (
	// ModeChange runs check, then change when always, triggered or the
	// check failed.
	ModeChange Mode = "change"
	// ModeCheck runs checks only; a failing check means "would change".
	ModeCheck Mode = "check"
	// ModeRemove runs in reverse order: check, then remove when always,
	// triggered or the check passed.
	ModeRemove Mode = "remove"
	// ModeDiffRemove is ModeRemove for commands dropped from a pattern
	// (spec §4.4): a command without a check is removed unconditionally,
	// one with a check only if the check passes, even when it is always
	// or triggered (§11.12).
	ModeDiffRemove Mode = "diffRemove"
)

// Options configure one Run. The zero value runs in change mode with the
// main exec defaults, no extra env, no filter and no logging.
type Options struct {
	// Mode is the operating mode; "" means ModeChange.
	Mode Mode
	// Exec is the effective exec of the layers outside the commands,
	// normally from MergeExec. If Exec.AllowOverride is nil, Exec is taken
	// as the main exec layer and merged onto the defaults first, so the
	// zero Exec means MergeExec(). Each command's own exec is applied on
	// top when Exec.AllowOverride is true, else ignored with a warning.
	Exec Exec
	// Env holds extra variables (ETCHA_EVENT_*, ETCHA_SOURCE_*, ...) given
	// to every script and usable in ${VAR} expansion.
	Env map[string]string
	// Environ is the environment ("k=v") a script inherits when its exec
	// sets envInherit: normally the process environment, which this
	// package never reads itself. Nil means nothing is inherited.
	Environ []string
	// ParentIDs, if not empty, restricts the run to commands that descend
	// from a group whose id is listed; "" selects top-level commands.
	ParentIDs []string
	// Logger receives per-command logs; nil discards them.
	Logger *slog.Logger
}

// Event is one etcha:<name> entry fired by a command (spec §4.6).
type Event struct {
	Name   string `json:"name"`   // without the etcha: prefix
	ID     string `json:"id"`     // id of the firing command
	Output string `json:"output"` // its trimmed change (or remove) output; "" for groups
}

// Output records one executed script.
type Output struct {
	ID       string `json:"id"`
	ParentID string `json:"parentID"` // nearest enclosing group id, "" at top level
	Phase    Mode   `json:"phase"`    // ModeCheck, ModeChange or ModeRemove
	Output   string `json:"output"`   // combined stdout+stderr, trimmed
	ExitCode int    `json:"exitCode"` // -1 when the script did not run to an exit status
}

// Result is the outcome of a Run.
type Result struct {
	// Changed lists, in execution order, the ids whose change ran,
	// including failed ones (change mode; spec §4.8), or whose check
	// failed (check mode: "would change"). A change that could not start
	// (bad exec.user, say) counts as failed.
	Changed []string
	// Removed lists, in execution order, the ids whose remove ran,
	// including failed ones.
	Removed []string
	// Events lists the fired etcha:* events in firing order.
	Events []Event
	// Outputs lists every executed script in execution order.
	Outputs []Output
	// Err is the first failure (spec §11.1), or nil.
	Err error
}

// Run validates c and runs it in opts.Mode. The procedure:
//
//  1. Validate c and opts.Mode, and compute the effective exec of every
//     command (whatever ParentIDs selects): one that asks for a container,
//     or whose command exec asks for one but is refused by the outer
//     chain, is refused, since container execs are not supported yet. On
//     error nothing runs and Result.Err holds the error.
//  2. Walk the list depth-first, in order (reverse order in remove modes).
//     A group runs its scope at its position; it counts as changed,
//     removed or failed if any descendant did, and then fires its own
//     onChange, onRemove or onFail.
//  3. Per command, apply the decision rules of spec §2.5, set the env
//     vars of §2.7 for all later scripts, and fire onChange (change
//     succeeded), onRemove (remove succeeded) or onFail (change or remove
//     failed) entries. Check mode fires nothing. A target triggered several
//     times runs once.
//  4. The first failure is kept in Result.Err. After it only commands that
//     a failing command (or failed group) targeted with onFail still run.
//     In remove modes those targets (later siblings, already visited)
//     run right after the failure, gated by their checks (spec §11.11);
//     then the run stops.
//
// Run is safe to call concurrently on the same Commands; it does not
// modify them.
func (c Commands) Run(ctx context.Context, opts Options) Result {
	r := newRunner(opts)
	switch r.mode {
	case ModeChange, ModeCheck, ModeRemove, ModeDiffRemove:
	default:
		r.res.Err = fmt.Errorf("unknown command mode %q; use change, check, remove or diffRemove", r.mode)
		return r.res
	}
	if err := c.Validate(); err != nil {
		r.res.Err = err
		return r.res
	}
	if err := r.checkExecs(c); err != nil {
		r.res.Err = err
		return r.res
	}
	r.runScope(ctx, c, nil)
	return r.res
}

type runner struct {
	mode Mode
	base Exec              // effective exec of the outer layers
	ctx  map[string]string // opts.Env
	inh  []string          // opts.Environ
	vars map[string]string // accumulated command variables (spec §2.7)
	pids []string
	log  *slog.Logger
	res  Result
}

func newRunner(opts Options) *runner {
	r := &runner{
		mode: opts.Mode,
		base: opts.Exec,
		ctx:  opts.Env,
		inh:  opts.Environ,
		vars: map[string]string{},
		pids: opts.ParentIDs,
		log:  opts.Logger,
	}
	if r.mode == "" {
		r.mode = ModeChange
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r.log = r.log.With("component", "command")
	if r.base.AllowOverride == nil {
		r.base, _, _ = MergeExec(Layer{Name: "exec", Exec: &opts.Exec}) // one layer: no refusals
	}
	return r
}

func (r *runner) removing() bool { return r.mode == ModeRemove || r.mode == ModeDiffRemove }

// outcome is what one command or group did.
type outcome struct {
	changed, removed, failed bool
	output                   string // change or remove output, for events
}

// scopeState tracks triggers within one scope.
type scopeState struct {
	by      []string // by[i] != "": triggered via that id
	onFail  []bool   // targeted by a failing command's onFail
	failRan []bool   // remove modes: already run as an onFail target
}

// runScope runs one scope; parents holds the ids of the enclosing groups,
// outermost first.
func (r *runner) runScope(ctx context.Context, scope Commands, parents []string) outcome {
	n := len(scope)
	st := scopeState{by: make([]string, n), onFail: make([]bool, n), failRan: make([]bool, n)}
	var agg outcome
	for k := range scope {
		i := k
		if r.removing() {
			i = len(scope) - 1 - k
		}
		if r.res.Err != nil && !st.onFail[i] {
			continue
		}
		if err := ctx.Err(); err != nil {
			r.fail(scope[i].ID, fmt.Errorf("command %q: not run: %w", scope[i].ID, context.Cause(ctx)))
			return agg
		}
		o := r.runOne(ctx, scope[i], parents, st.by[i])
		r.fire(scope, i, o, &st)
		agg.add(o)
		if o.failed && r.removing() {
			r.runFailTargets(ctx, scope, i, parents, &st, &agg)
		}
	}
	return agg
}

func (a *outcome) add(o outcome) {
	a.changed = a.changed || o.changed
	a.removed = a.removed || o.removed
	a.failed = a.failed || o.failed
}

// runFailTargets runs, in remove modes, the onFail targets of the failed
// scope[i] (spec §11.11). They are later siblings, which the reverse walk
// has already visited, so they run now, in walk order (last first), in
// the run's mode and gated by their checks as usual: they are not
// triggered, so a target whose remove already ran is removed again only if
// its check still passes. A failing target's own onFail targets follow in
// the same way. Each command runs here at most once per scope. The walk
// then stops, since the run has failed.
func (r *runner) runFailTargets(ctx context.Context, scope Commands, i int, parents []string, st *scopeState, agg *outcome) {
	var targets []int
	for _, e := range scope[i].OnFail {
		js, _ := resolve(scope, i, e, onFail) // validated in Run
		targets = append(targets, js...)
	}
	slices.Sort(targets)
	for _, j := range slices.Backward(slices.Compact(targets)) {
		if st.failRan[j] {
			continue
		}
		st.failRan[j] = true
		if err := ctx.Err(); err != nil {
			r.fail(scope[j].ID, fmt.Errorf("command %q: not run: %w", scope[j].ID, context.Cause(ctx)))
			return
		}
		r.log.Info("Running onFail target "+scope[j].ID+" of "+scope[i].ID, "commandID", scope[j].ID, "commandMode", r.mode)
		o := r.runOne(ctx, scope[j], parents, "")
		r.fire(scope, j, o, st)
		agg.add(o)
		if o.failed {
			r.runFailTargets(ctx, scope, j, parents, st, agg)
		}
	}
}

func (r *runner) runOne(ctx context.Context, cmd *Command, parents []string, by string) outcome {
	if cmd.IsGroup() {
		return r.runScope(ctx, cmd.Commands, append(slices.Clip(parents), cmd.ID))
	}
	if !r.selected(parents) {
		return outcome{}
	}
	parent := ""
	if len(parents) > 0 {
		parent = parents[len(parents)-1]
	}
	return r.runCommand(ctx, cmd, parent, by)
}

// selected applies the ParentIDs filter.
func (r *runner) selected(parents []string) bool {
	if len(r.pids) == 0 {
		return true
	}
	for _, p := range r.pids {
		if (p == "" && len(parents) == 0) || (p != "" && slices.Contains(parents, p)) {
			return true
		}
	}
	return false
}

// fire handles the trigger lists of scope[i] after it ran (spec §2.6).
func (r *runner) fire(scope Commands, i int, o outcome, st *scopeState) {
	if r.mode == ModeCheck {
		return
	}
	cmd := scope[i]
	var lists []triggerList
	if o.changed {
		lists = append(lists, triggerList{onChange, cmd.OnChange})
	}
	if o.removed {
		lists = append(lists, triggerList{onRemove, cmd.OnRemove})
	}
	if o.failed {
		lists = append(lists, triggerList{onFail, cmd.OnFail})
	}
	for _, tl := range lists {
		for _, e := range tl.entries {
			targets, _ := resolve(scope, i, e, tl.kind) // validated in Run
			if targets == nil {
				r.res.Events = append(r.res.Events, Event{Name: e[len(EventPrefix):], ID: cmd.ID, Output: o.output})
				r.log.Debug("Fired event "+e, "commandID", cmd.ID)
			}
			for _, j := range targets {
				if st.by[j] == "" {
					st.by[j] = cmd.ID
				}
				st.onFail[j] = st.onFail[j] || tl.kind == onFail
			}
		}
	}
}

// fail records err as the run's error if it is the first, else logs it.
func (r *runner) fail(id string, err error) {
	if r.res.Err == nil {
		r.res.Err = err
		return
	}
	r.log.Error("Command failed after an earlier failure", "commandID", id, "err", err)
}
