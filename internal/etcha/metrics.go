package etcha

import (
	"github.com/dispenser-dev/dispenser/internal/command"
	"github.com/dispenser-dev/dispenser/internal/metrics"
	"github.com/dispenser-dev/dispenser/internal/source"
)

// RecordResult feeds one engine result to m (spec §8): a refused JWT
// counts by reason; a run counts in etcha_sources_total,
// etcha_commands_total and etcha_sources_commands; the iat of an accepted
// pulled or pushed JWT becomes the source's last accepted iat. Results
// that ran nothing (unchanged, stored, skipped) count only their iat.
func RecordResult(m *metrics.Etcha, name string, o source.Origin, r source.Result) {
	switch r.Status {
	case source.StatusRefused:
		m.Refused(name, string(r.Reason))
		return
	case source.StatusRan, source.StatusStored, source.StatusUnchanged:
		if !r.IssuedAt.IsZero() && (o.Trigger == source.TriggerPull || o.Trigger == source.TriggerPush) {
			m.Accepted(name, r.IssuedAt)
		}
	}
	if r.Status != source.StatusRan {
		return
	}
	m.Ran(MetricsRun(name, o, r))
}

// MetricsRun maps a run's Result to metrics.Run (spec §8). remote_addr is
// the client's address for push and webhook runs, "" otherwise. Every
// executed script is one evaluation, failed when it exited non-zero; a
// change that ran without a check (always or triggered) also counts as a
// failed check evaluation, and so does, in check mode, a command that
// would change and has no check. Diff removals of check-less commands get
// no check evaluation.
func MetricsRun(name string, o source.Origin, r source.Result) metrics.Run {
	run := metrics.Run{
		Source: name, Trigger: string(o.Trigger), PublicKey: r.PublicKey,
		Changed: len(r.Changed), Removed: len(r.Removed), Failed: r.Err != nil,
	}
	if o.Trigger == source.TriggerPush || o.Trigger == source.TriggerWebhook {
		run.RemoteAddr = o.Where
	}
	checked := map[string]bool{}
	for i, out := range r.Outputs {
		if out.Phase == command.ModeChange && !checkedBefore(r.Outputs, i) {
			run.Commands = append(run.Commands, metrics.Evaluation{ID: out.ID, ParentID: out.ParentID, Mode: string(command.ModeCheck), Failed: true})
		}
		if out.Phase == command.ModeCheck {
			checked[out.ID] = true
		}
		run.Commands = append(run.Commands, metrics.Evaluation{ID: out.ID, ParentID: out.ParentID, Mode: string(out.Phase), Failed: out.ExitCode != 0})
	}
	if r.Mode == command.ModeCheck {
		for _, id := range r.Changed {
			if !checked[id] {
				run.Commands = append(run.Commands, metrics.Evaluation{ID: id, Mode: string(command.ModeCheck), Failed: true})
			}
		}
	}
	return run
}

// checkedBefore reports whether the script before outs[i] is the check of
// the same command.
func checkedBefore(outs []command.Output, i int) bool {
	if i == 0 {
		return false
	}
	p := outs[i-1]
	return p.Phase == command.ModeCheck && p.ID == outs[i].ID && p.ParentID == outs[i].ParentID
}
