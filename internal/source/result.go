package source

import (
	"encoding/json"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/token"
)

// Trigger says what started a run or brought a pattern. Its values are the
// metrics trigger label (spec §8).
type Trigger string

// Triggers.
const (
	TriggerStartup Trigger = ""        // the start-up run of a restored or static pattern (spec §8: "")
	TriggerPull    Trigger = "pull"    // a pulled pattern, or a runFrequency tick
	TriggerPush    Trigger = "push"    // a pushed pattern
	TriggerEvent   Trigger = "event"   // an event run (spec §4.6)
	TriggerWebhook Trigger = "webhook" // a webhook run (spec §4.7)
)

// Origin says where a pattern or a run request came from: for logs, the
// Result, and the OnResult hook.
type Origin struct {
	// Trigger is the kind of arrival.
	Trigger Trigger
	// Where is the pull path (file, URL, etcd:///key) or, for a push, the
	// client's address. "" if there is none.
	Where string
	// Tick marks a runFrequency tick: a pattern equal to the current one
	// runs again (spec §11.2) instead of being skipped.
	Tick bool
	// Check asks for a dry run in check mode (push ?check=true): the
	// pattern is verified and run in check mode, but never made current,
	// saved, or diffed (nothing is removed).
	Check bool
	// ParentIDs restricts the run to descendants of these group ids
	// (push ?parent=); nil runs everything.
	ParentIDs []string
	// Env holds extra variables for every script of the run (for
	// ETCHA_EVENT_*, ETCHA_WEBHOOK_*, spec §2.7).
	Env map[string]string
}

// Status is what Receive or Run did.
type Status string

// Statuses.
const (
	// StatusRefused: the pattern was refused (Result.Reason says why);
	// nothing ran and the current pattern was kept.
	StatusRefused Status = "refused"
	// StatusUnchanged: the pattern equals the current one (spec §3.7);
	// nothing ran.
	StatusUnchanged Status = "unchanged"
	// StatusStored: a triggerOnly source stored the new pattern; nothing
	// ran.
	StatusStored Status = "stored"
	// StatusSkipped: Run had nothing to do (no current pattern, or a
	// triggerOnly source at start-up or on a tick).
	StatusSkipped Status = "skipped"
	// StatusRan: commands ran (possibly none of them changed anything;
	// Result.Err says whether one failed).
	StatusRan Status = "ran"
)

// Reasons a pattern is refused besides the token.Reason values of
// token.Verify.
const (
	// ReasonRollback: a verified JWT older (iat) than the current one,
	// on a source without allowRollback (spec §11.10).
	ReasonRollback token.Reason = "rollback"
	// ReasonRender: the JWT verified but its pattern did not render.
	ReasonRender token.Reason = "render"
)

// PushCommandID is the id of the command an ad-hoc `etcha push` wraps its
// command in (spec §4.8); its change output becomes Result.Output.
const PushCommandID = "etcha push"

// Result is the outcome of one Receive or Run: the three diff phases
// combined (spec §4.4, §4.8, §11.7).
type Result struct {
	Source string
	Origin Origin
	Status Status
	// Reason is set when Status is StatusRefused.
	Reason token.Reason
	// Mode is command.ModeCheck for a check-mode run, else
	// command.ModeChange.
	Mode command.Mode
	// Changed lists, in execution order, the ids whose change ran
	// (including failed ones), or in check mode whose check failed.
	Changed []string
	// Removed lists, in execution order, the ids whose remove ran in the
	// removals before and after the change run.
	Removed []string
	// Err is why the pattern was refused, or the first failure of the
	// run (phase order); nil if none.
	Err error
	// Exit is true iff a command fired etcha:exit.
	Exit bool
	// Output is the change output of the command PushCommandID, if it ran.
	Output string
	// Events lists the fired etcha:* events of all phases in firing
	// order, for the events seam (spec §4.6).
	Events []command.Event
	// Outputs lists every executed script of all phases in order.
	Outputs []command.Output
	// PublicKey is the ID of the key that verified the pattern that ran
	// or was offered ("" for static commands).
	PublicKey string
	// IssuedAt and JTI are the iat and jti of that pattern.
	IssuedAt time.Time
	JTI      string
}

// wire is the push Result JSON (spec §4.8, §11.7).
type wire struct {
	Changed []string `json:"changed"`
	Removed []string `json:"removed"`
	Err     string   `json:"err,omitempty"`
	Exit    bool     `json:"exit"`
	Output  string   `json:"output,omitempty"`
}

// MarshalJSON encodes the push Result JSON: changed, removed (both [] when
// empty), err (omitted when none), exit, output (omitted when empty).
func (r Result) MarshalJSON() ([]byte, error) {
	w := wire{Changed: r.Changed, Removed: r.Removed, Exit: r.Exit, Output: r.Output}
	if w.Changed == nil {
		w.Changed = []string{}
	}
	if w.Removed == nil {
		w.Removed = []string{}
	}
	if r.Err != nil {
		w.Err = r.Err.Error()
	}
	return json.Marshal(w)
}

// add appends the outcome of one phase.
func (r *Result) add(c command.Result) {
	r.Changed = append(r.Changed, c.Changed...)
	r.Removed = append(r.Removed, c.Removed...)
	r.Events = append(r.Events, c.Events...)
	r.Outputs = append(r.Outputs, c.Outputs...)
	if r.Err == nil {
		r.Err = c.Err
	}
	for _, ev := range c.Events {
		if ev.Name == "exit" {
			r.Exit = true
		}
	}
	for _, o := range c.Outputs {
		if o.ID == PushCommandID && o.Phase == command.ModeChange {
			r.Output = o.Output
		}
	}
}
