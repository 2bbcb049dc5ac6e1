package command

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var traceRE = regexp.MustCompile(`@([A-Za-z0-9_-]+)`)

// scripted parses js after replacing each @word with a script that appends
// word to the trace file.
func scripted(tb testing.TB, js string) Commands {
	tb.Helper()
	return parse(tb, traceRE.ReplaceAllString(js, `echo $1 >>$$TRACE`))
}

type runCase struct {
	name        string
	js          string
	mode        Mode
	parents     []string
	wantTrace   string
	wantChanged string
	wantRemoved string
	wantEvents  string
	wantErr     string
}

func (tt runCase) test(t *testing.T) {
	t.Helper()
	h := newHarness(t)
	res := h.run(scripted(t, tt.js), Options{Mode: tt.mode, ParentIDs: tt.parents})
	checkErr(t, res.Err, tt.wantErr)
	if got := h.lines(); got != tt.wantTrace {
		t.Fatalf("trace = %q, want %q", got, tt.wantTrace)
	}
	if got := join(res.Changed); got != tt.wantChanged {
		t.Fatalf("Changed = %q, want %q", got, tt.wantChanged)
	}
	if got := join(res.Removed); got != tt.wantRemoved {
		t.Fatalf("Removed = %q, want %q", got, tt.wantRemoved)
	}
	if got := eventsString(res.Events); got != tt.wantEvents {
		t.Fatalf("Events = %q, want %q", got, tt.wantEvents)
	}
}

func TestChangeMode(t *testing.T) {
	tests := []runCase{
		{name: "check passes", js: `[{"id":"a","check":"@check-a","change":"@change-a"}]`,
			wantTrace: "check-a"},
		{name: "check fails", js: `[{"id":"a","check":"@check-a; exit 3","change":"@change-a"}]`,
			wantTrace: "check-a,change-a", wantChanged: "a"},
		{name: "no check no always", js: `[{"id":"a","change":"@change-a","remove":"@remove-a"}]`},
		{name: "always without check", js: `[{"id":"a","always":true,"change":"@change-a"}]`,
			wantTrace: "change-a", wantChanged: "a"},
		{name: "always with passing check", js: `[{"id":"a","always":true,"check":"@check-a","change":"@change-a"}]`,
			wantTrace: "check-a,change-a", wantChanged: "a"},
		{name: "list order", js: `[{"id":"a","always":true,"change":"@a"},[{"id":"b","always":true,"change":"@b"}],{"id":"c","always":true,"change":"@c"}]`,
			wantTrace: "a,b,c", wantChanged: "a,b,c"},
		{name: "empty change counts as changed", js: `[{"id":"a","check":"false","onChange":["b"]},{"id":"b","change":"@b"}]`,
			wantTrace: "b", wantChanged: "a,b"},
		{name: "trigger exact id", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["c"]},
			{"id":"b","change":"@b"},
			{"id":"c","change":"@c"}]`,
			wantTrace: "a,c", wantChanged: "a,c"},
		{name: "trigger with passing check still changes", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["b"]},
			{"id":"b","check":"@check-b","change":"@b"}]`,
			wantTrace: "a,check-b,b", wantChanged: "a,b"},
		{name: "trigger regexp is anchored", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["t[0-9]"]},
			{"id":"t1","change":"@t1"},
			{"id":"xt2","change":"@xt2"},
			{"id":"t3","change":"@t3"}]`,
			wantTrace: "a,t1,t3", wantChanged: "a,t1,t3"},
		{name: "exact id wins over regexp", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["b.*"]},
			{"id":"b.*","change":"@exact"},
			{"id":"bb","change":"@bb"}]`,
			wantTrace: "a,exact", wantChanged: "a,b.*"},
		{name: "triggered once by several", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["c","c"]},
			{"id":"b","always":true,"change":"@b","onChange":["c"]},
			{"id":"c","change":"@c"}]`,
			wantTrace: "a,b,c", wantChanged: "a,b,c"},
		{name: "no trigger when nothing changed", js: `[
			{"id":"a","check":"true","change":"@a","onChange":["b"]},
			{"id":"b","change":"@b"}]`},
		{name: "trigger chain", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["b"]},
			{"id":"b","change":"@b","onChange":["c"]},
			{"id":"c","change":"@c"}]`,
			wantTrace: "a,b,c", wantChanged: "a,b,c"},
		{name: "events carry trimmed output", js: `[
			{"id":"a","always":true,"change":"echo '  out a  '","onChange":["etcha:buildManifest","b","etcha:runVar_x"]},
			{"id":"b","change":"printf 'b\\n\\n'","onChange":"etcha:stdout"}]`,
			wantChanged: "a,b", wantEvents: "buildManifest/a/out a,runVar_x/a/out a,stdout/b/b"},
		{name: "group runs at its position", js: `[
			{"id":"a","always":true,"change":"@a"},
			{"id":"g","commands":[{"id":"x","always":true,"change":"@x"},[{"id":"y","always":true,"change":"@y"}]]},
			{"id":"b","always":true,"change":"@b"}]`,
			wantTrace: "a,x,y,b", wantChanged: "a,x,y,b"},
		{name: "group onChange fires once when a child changed", js: `[
			{"id":"g","onChange":["after","etcha:grp"],"commands":[
				{"id":"x","always":true,"change":"@x"},
				{"id":"y","always":true,"change":"@y"}]},
			{"id":"after","change":"@after"}]`,
			wantTrace: "x,y,after", wantChanged: "x,y,after", wantEvents: "grp/g/"},
		{name: "group onChange silent when nothing changed", js: `[
			{"id":"g","onChange":["after"],"commands":[{"id":"x","check":"true","change":"@x"}]},
			{"id":"after","change":"@after"}]`},
		{name: "group is its own scope", js: `[
			{"id":"g","commands":[
				{"id":"x","always":true,"change":"@x","onChange":["y"]},
				{"id":"y","change":"@inner-y"}]},
			{"id":"y","change":"@outer-y"}]`,
			wantTrace: "x,inner-y", wantChanged: "x,y"},
		{name: "failure stops the rest", js: `[
			{"id":"a","always":true,"change":"@a; exit 4","onChange":["b"]},
			{"id":"b","change":"@b"},
			{"id":"c","always":true,"change":"@c"}]`,
			wantTrace: "a", wantChanged: "a", wantErr: `command "a": change exited with status 4 (no output)`},
		{name: "onFail targets still run", js: `[
			{"id":"a","always":true,"change":"echo boom; exit 1","onFail":["f1","etcha:failed"],"onChange":["c"]},
			{"id":"b","always":true,"change":"@b"},
			{"id":"f1","change":"@f1"},
			{"id":"c","change":"@c"},
			{"id":"f2","change":"@f2"}]`,
			wantTrace: "f1", wantChanged: "a,f1", wantEvents: "failed/a/boom", wantErr: `command "a": change exited with status 1: boom`},
		{name: "earlier onChange targets do not run after a failure", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["c"]},
			{"id":"b","always":true,"change":"exit 1","onFail":["d"]},
			{"id":"c","change":"@c"},
			{"id":"d","change":"@d"}]`,
			wantTrace: "a,d", wantChanged: "a,b,d", wantErr: `command "b"`},
		{name: "failing check is not a failure", js: `[
			{"id":"a","check":"exit 1","change":"true","onFail":["f"]},
			{"id":"f","change":"@f"}]`,
			wantChanged: "a"},
		{name: "failure in group reaches group onFail", js: `[
			{"id":"g","onFail":["cleanup"],"commands":[
				{"id":"x","always":true,"change":"false","onFail":["rescue"]},
				{"id":"y","always":true,"change":"@y"},
				{"id":"rescue","change":"@rescue"}]},
			{"id":"z","always":true,"change":"@z"},
			{"id":"cleanup","change":"@cleanup"}]`,
			wantTrace: "rescue,cleanup", wantChanged: "x,rescue,cleanup", wantErr: `command "x": change exited with status 1 (no output)`},
		{name: "first error kept", js: `[
			{"id":"a","always":true,"change":"exit 1","onFail":["b"]},
			{"id":"b","change":"exit 2"}]`,
			wantChanged: "a,b", wantErr: `command "a": change exited with status 1`},
		{name: "parent filter top level", parents: []string{""}, js: `[
			{"id":"a","always":true,"change":"@a"},
			{"id":"g","commands":[{"id":"x","always":true,"change":"@x"}]}]`,
			wantTrace: "a", wantChanged: "a"},
		{name: "parent filter selects descendants", parents: []string{"g"}, js: `[
			{"id":"a","always":true,"change":"@a"},
			{"id":"g","commands":[
				{"id":"x","always":true,"change":"@x"},
				{"id":"h","commands":[{"id":"y","always":true,"change":"@y"}]}]},
			{"id":"k","commands":[{"id":"z","always":true,"change":"@z"}]}]`,
			wantTrace: "x,y", wantChanged: "x,y"},
		{name: "unknown mode runs nothing", mode: "apply", js: `[{"id":"a","always":true,"change":"@a"}]`,
			wantErr: `unknown command mode "apply"`},
		{name: "invalid list runs nothing", js: `[
			{"id":"a","always":true,"change":"@a","onChange":["nope"]}]`,
			wantErr: `command "a": onChange target "nope" not found after it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}

func TestCheckMode(t *testing.T) {
	tests := []runCase{
		{name: "reports would-change and runs only checks", mode: ModeCheck, js: `[
			{"id":"a","check":"@check-a; false","change":"@change-a","onChange":["b","etcha:e"]},
			{"id":"b","check":"@check-b","change":"@change-b","remove":"@remove-b"},
			{"id":"c","always":true,"change":"@change-c"},
			{"id":"g","commands":[{"id":"x","check":"@check-x; exit 2","change":"@change-x"}]}]`,
			wantTrace: "check-a,check-b,check-x", wantChanged: "a,x"},
		{name: "check start failure is an error", mode: ModeCheck, js: `[
			{"id":"a","check":"true","exec":{"user":"no-such-user-xyz"},"onFail":["etcha:failed","b"]},
			{"id":"b","check":"@check-b"}]`,
			wantErr: `command "a": check: exec.user "no-such-user-xyz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}

func TestRemoveMode(t *testing.T) {
	tests := []runCase{
		{name: "reverse order and decision rules", mode: ModeRemove, js: `[
			{"id":"present","check":"@check-present","remove":"@remove-present"},
			{"id":"absent","check":"@check-absent; false","remove":"@remove-absent"},
			{"id":"always","always":true,"remove":"@remove-always"},
			{"id":"unchecked","change":"@change-unchecked","remove":"@remove-unchecked"},
			{"id":"build","always":true,"change":"@change-build"}]`,
			wantTrace: "remove-always,check-absent,check-present,remove-present", wantRemoved: "always,present"},
		{name: "groups reversed depth-first", mode: ModeRemove, js: `[
			{"id":"a","always":true,"remove":"@a"},
			{"id":"g","commands":[
				{"id":"x","always":true,"remove":"@x"},
				{"id":"y","always":true,"remove":"@y"}]},
			{"id":"b","always":true,"remove":"@b"}]`,
			wantTrace: "b,y,x,a", wantRemoved: "b,y,x,a"},
		{name: "onRemove targets earlier commands", mode: ModeRemove, js: `[
			{"id":"svc","remove":"@remove-svc"},
			{"id":"other","remove":"@remove-other"},
			{"id":"file","check":"true","remove":"@remove-file","onRemove":["svc","etcha:gone"]}]`,
			wantTrace: "remove-file,remove-svc", wantRemoved: "file,svc", wantEvents: "gone/file/"},
		{name: "group onRemove", mode: ModeRemove, js: `[
			{"id":"before","remove":"@before"},
			{"id":"g","onRemove":["before"],"commands":[{"id":"x","always":true,"remove":"@x"}]}]`,
			wantTrace: "x,before", wantRemoved: "x,before"},
		{name: "remove failure", mode: ModeRemove, js: `[
			{"id":"a","always":true,"remove":"@a"},
			{"id":"b","always":true,"remove":"exit 5"}]`,
			wantRemoved: "b", wantErr: `command "b": remove exited with status 5`},
		{name: "diff removal removes unchecked", mode: ModeDiffRemove, js: `[
			{"id":"unchecked","remove":"@remove-unchecked"},
			{"id":"absent","check":"false","remove":"@remove-absent"},
			{"id":"present","check":"true","remove":"@remove-present"}]`,
			wantTrace: "remove-present,remove-unchecked", wantRemoved: "present,unchecked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}

func TestLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	h := newHarness(t)
	res := h.run(parse(t, `[
		{"id":"a","always":true,"change":"true","onChange":["c"]},
		{"id":"b","check":"false","change":"true"},
		{"id":"c","change":"true","exec":{"workDir":"/"}}]`),
		Options{Exec: Exec{AllowOverride: boolPtr(false), Command: "/bin/sh -c"}, Logger: log})
	checkErr(t, res.Err, "")
	for _, want := range []string{
		`msg="Always changed a" component=command commandID=a commandMode=change parentID=""`,
		`msg="Changed b"`,
		`msg="Triggered c via a"`,
		`msg="Changed c"`,
		`level=WARN msg="Ignoring the command exec of c: the outer exec chain`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestOutputs(t *testing.T) {
	h := newHarness(t)
	res := h.run(parse(t, `[
		{"id":"a","check":"echo no; exit 3","change":"echo yes"},
		{"id":"g","commands":[{"id":"x","check":"echo fine"}]}]`), Options{})
	checkErr(t, res.Err, "")
	var got []string
	for _, o := range res.Outputs {
		got = append(got, fmt.Sprintf("%s/%s/%s/%s/%d", o.ID, o.ParentID, o.Phase, o.Output, o.ExitCode))
	}
	if got, want := join(got), "a//check/no/3,a//change/yes/0,x/g/check/fine/0"; got != want {
		t.Fatalf("Outputs = %q, want %q", got, want)
	}
}

// TestConcurrentRuns runs one list twice at once; the race detector checks
// that Run does not share state between runs.
func TestConcurrentRuns(t *testing.T) {
	cs := parse(t, `[
		{"id":"a","envPrefix":"A","always":true,"change":"echo a","onChange":["b","etcha:e"]},
		{"id":"b","change":"echo ${A_CHANGE_OUT}"}]`)
	results := make([]Result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			results[i] = cs.Run(context.Background(), Options{Exec: shExec()})
		})
	}
	wg.Wait()
	for i, res := range results {
		checkErr(t, res.Err, "")
		if got, want := join(res.Changed)+" "+outputOf(t, res, "b", ModeChange), "a,b a"; got != want {
			t.Fatalf("run %d: %q, want %q", i, got, want)
		}
	}
}

// TestResultListsFailed is issue 7 item 20: Changed and Removed list the
// commands whose change or remove ran, failed ones included, in execution
// order (spec §4.8), with the start failure of a bad exec.user counted.
func TestResultListsFailed(t *testing.T) {
	tests := []runCase{
		{name: "change", js: `[
			{"id":"ok1","always":true,"change":"@ok1"},
			{"id":"bad","always":true,"change":"@bad; exit 3","onFail":["rescue","nouser"]},
			{"id":"skipped","always":true,"change":"@skipped"},
			{"id":"rescue","change":"@rescue; exit 4"},
			{"id":"nouser","change":"true","exec":{"user":"no-such-user-xyz"}}]`,
			wantTrace: "ok1,bad,rescue", wantChanged: "ok1,bad,rescue,nouser",
			wantErr: `command "bad": change exited with status 3 (no output)`},
		{name: "remove", mode: ModeRemove, js: `[
			{"id":"skipped","always":true,"remove":"@skipped"},
			{"id":"bad","always":true,"remove":"@bad; exit 5"},
			{"id":"ok1","always":true,"remove":"@ok1"}]`,
			wantTrace: "ok1,bad", wantRemoved: "ok1,bad",
			wantErr: `command "bad": remove exited with status 5 (no output)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}

// TestRemoveModeOnFail is issue 7 item 21 (spec §11.11): in remove mode a
// failing command's onFail targets, later siblings the reverse walk has
// already visited, run right after the failure, gated by their checks, and
// then the run stops.
func TestRemoveModeOnFail(t *testing.T) {
	tests := []runCase{
		{name: "remove", mode: ModeRemove, js: `[
			{"id":"a","always":true,"remove":"@remove-a"},
			{"id":"b","always":true,"remove":"@remove-b; exit 3","onFail":["f","g","etcha:failed"]},
			{"id":"f","check":"@check-f","remove":"@remove-f"},
			{"id":"g","check":"@check-g; false","remove":"@remove-g"}]`,
			wantTrace:   "check-g,check-f,remove-f,remove-b,check-g,check-f,remove-f",
			wantRemoved: "f,b,f", wantEvents: "failed/b/",
			wantErr: `command "b": remove exited with status 3 (no output)`},
		// f1's check passes only once b has run, so the walk skips it.
		{name: "cascade", mode: ModeRemove, js: `[
			{"id":"b","always":true,"remove":"@remove-b; touch $TRACE.b; exit 3","onFail":["f1"]},
			{"id":"f1","check":"test -e $TRACE.b","remove":"@remove-f1; exit 4","onFail":["f2"]},
			{"id":"f2","check":"@check-f2","remove":"@remove-f2"}]`,
			wantTrace:   "check-f2,remove-f2,remove-b,remove-f1,check-f2,remove-f2",
			wantRemoved: "f2,b,f1,f2", wantErr: `command "b": remove exited with status 3 (no output)`},
		{name: "each target once", mode: ModeRemove, js: `[
			{"id":"b","always":true,"remove":"@remove-b; touch $TRACE.b; exit 3","onFail":["f.*"]},
			{"id":"f1","check":"test -e $TRACE.b","remove":"@remove-f1; exit 4","onFail":["f2"]},
			{"id":"f2","check":"@check-f2","remove":"@remove-f2"}]`,
			wantTrace:   "check-f2,remove-f2,remove-b,check-f2,remove-f2,remove-f1",
			wantRemoved: "f2,b,f2,f1", wantErr: `command "b": remove exited with status 3 (no output)`},
		{name: "diff removal", mode: ModeDiffRemove, js: `[
			{"id":"x","remove":"@remove-x; false","onFail":["y"]},
			{"id":"y","remove":"@remove-y"}]`,
			wantTrace: "remove-y,remove-x,remove-y", wantRemoved: "y,x,y",
			wantErr: `command "x": remove exited with status 1 (no output)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}

// TestDiffRemoveAlways is issue 7 item 22 (spec §11.12): in diff removal a
// command with a check is removed only if the check passes, even when it
// is always (or triggered); plain remove mode keeps always forcing it.
func TestDiffRemoveAlways(t *testing.T) {
	js := `[
		{"id":"gone","always":true,"check":"@check-gone; false","remove":"@remove-gone"},
		{"id":"here","always":true,"check":"@check-here","remove":"@remove-here"},
		{"id":"target","check":"@check-target; false","remove":"@remove-target"},
		{"id":"c","remove":"@remove-c","onRemove":["target"]}]`
	tests := []runCase{
		{name: "diff removal", mode: ModeDiffRemove, js: js,
			wantTrace:   "remove-c,check-target,check-here,remove-here,check-gone",
			wantRemoved: "c,here"},
		{name: "plain remove mode", mode: ModeRemove, js: js,
			wantTrace:   "check-target,check-here,remove-here,check-gone,remove-gone",
			wantRemoved: "here,gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.test)
	}
}
