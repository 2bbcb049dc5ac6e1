package command

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func execJSON(tb testing.TB, js string) *Exec {
	tb.Helper()
	if js == "" {
		return nil
	}
	var e Exec
	if err := json.Unmarshal([]byte(js), &e); err != nil {
		tb.Fatalf("parse exec %s: %v", js, err)
	}
	return &e
}

func TestMergeExec(t *testing.T) {
	tests := []struct {
		name      string
		layers    []string // JSON, "" = nil layer
		want      string   // JSON of the effective exec
		wantWarns int
	}{
		{"defaults", nil, `{"allowOverride":true,"command":"/usr/bin/bash -e -o pipefail -c"}`, 0},
		{"nil main", []string{""}, `{"allowOverride":true,"command":"/usr/bin/bash -e -o pipefail -c"}`, 0},
		{"main overrides defaults", []string{`{"command":"/bin/sh -c","user":"u"}`},
			`{"allowOverride":true,"command":"/bin/sh -c","user":"u"}`, 0},
		{"partial override, env merged", []string{
			`{"env":{"A":"main","B":"main"},"workDir":"/m"}`,
			`{"env":{"B":"src","C":"src"},"allowOverride":true}`,
			`{"user":"p"}`},
			`{"allowOverride":false,"command":"/usr/bin/bash -e -o pipefail -c","env":{"A":"main","B":"src","C":"src"},"user":"p","workDir":"/m"}`, 0},
		{"layer without allowOverride blocks later layers", []string{
			`{}`, `{"user":"src"}`, `{"user":"pattern"}`, `{"user":"cmd"}`},
			`{"allowOverride":false,"command":"/usr/bin/bash -e -o pipefail -c","user":"src"}`, 1},
		{"main allowOverride false blocks everything", []string{
			`{"allowOverride":false,"command":"/bin/sh -c"}`, `{"command":"/bin/dash -c"}`},
			`{"allowOverride":false,"command":"/bin/sh -c"}`, 1},
		{"empty layers are skipped", []string{
			`{"allowOverride":false}`, "", `{}`},
			`{"allowOverride":false,"command":"/usr/bin/bash -e -o pipefail -c"}`, 0},
		{"chain all allowing", []string{
			`{}`, `{"allowOverride":true,"sudo":true}`, `{"allowOverride":true,"envInherit":true}`, `{"workDir":"/c"}`},
			`{"allowOverride":false,"command":"/usr/bin/bash -e -o pipefail -c","envInherit":true,"sudo":true,"workDir":"/c"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layers := make([]Layer, len(tt.layers))
			for i, js := range tt.layers {
				layers[i] = Layer{Exec: execJSON(t, js)}
			}
			got, warns, err := MergeExec(layers...)
			if err != nil {
				t.Fatal(err)
			}
			gotJS, _ := json.Marshal(got)
			if string(gotJS) != tt.want {
				t.Fatalf("MergeExec = %s, want %s", gotJS, tt.want)
			}
			if len(warns) != tt.wantWarns {
				t.Fatalf("warnings = %q, want %d", warns, tt.wantWarns)
			}
		})
	}
}

// TestMergeExecNamesLayers checks that warnings name the ignored layer and
// the one that refused it, and that an ignored layer asking for a container
// is an error rather than a warning.
func TestMergeExecNamesLayers(t *testing.T) {
	tests := []struct {
		name     string
		layers   []Layer
		wantWarn string
		wantErr  string
	}{
		{"source exec refused by exec", []Layer{
			{"exec", &Exec{AllowOverride: boolPtr(false)}},
			{"sources.web.exec", &Exec{User: "u"}},
			{"runExec", &Exec{User: "p"}}},
			"sources.web.exec ignored with all later exec layers: exec does not allow overrides; set allowOverride: true on exec", ""},
		{"runExec refused by source exec", []Layer{
			{"exec", &Exec{}},
			{"sources.web.exec", &Exec{User: "u"}},
			{"runExec", &Exec{User: "p"}}},
			"runExec ignored with all later exec layers: sources.web.exec does not allow overrides", ""},
		{"empty source exec passes on the main exec's word", []Layer{
			{"exec", &Exec{AllowOverride: boolPtr(false)}},
			{"sources.web.exec", nil},
			{"buildExec", &Exec{User: "p"}}},
			"buildExec ignored with all later exec layers: exec does not allow overrides", ""},
		{"refused container layer", []Layer{
			{"exec", &Exec{AllowOverride: boolPtr(false)}},
			{"runExec", &Exec{ContainerImage: "alpine"}}},
			"", `runExec asks for container image "alpine" but exec does not allow overrides, and container execs are not supported yet`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warns, err := MergeExec(tt.layers...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("MergeExec error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(warns) != 1 || !strings.Contains(warns[0], tt.wantWarn) {
				t.Fatalf("warnings = %q, want one containing %q", warns, tt.wantWarn)
			}
		})
	}
}

func TestMergeExecDoesNotAlias(t *testing.T) {
	main := &Exec{Env: map[string]string{"A": "1"}}
	src := &Exec{Env: map[string]string{"B": "2"}}
	eff, _, _ := MergeExec(Layer{Exec: main}, Layer{Exec: src})
	eff.Env["C"] = "3"
	if len(main.Env) != 1 || len(src.Env) != 1 {
		t.Fatalf("layers modified: %v %v", main.Env, src.Env)
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"/usr/bin/bash -e -o pipefail -c", []string{"/usr/bin/bash", "-e", "-o", "pipefail", "-c"}, ""},
		{"  a\t b\n", []string{"a", "b"}, ""},
		{`a 'b c' "d e"`, []string{"a", "b c", "d e"}, ""},
		{`a'b'"c"d`, []string{"abcd"}, ""},
		{`'' ""`, []string{"", ""}, ""},
		{`'a\b' "a\b" a\ b`, []string{`a\b`, `a\b`, "a b"}, ""},
		{`"q\"q \$x \\ \` + "`" + `"`, []string{"q\"q $x \\ `"}, ""},
		{"a\\\nb", []string{"ab"}, ""},
		{"", nil, ""},
		{"'open", nil, "unterminated single quote"},
		{`"open`, nil, "unterminated double quote"},
		{`a\`, nil, "trailing backslash"},
	}
	for _, tt := range tests {
		got, err := SplitWords(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SplitWords(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestArgv(t *testing.T) {
	tests := []struct {
		name    string
		exec    Exec
		script  string
		euid    int
		want    []string
		wantErr string
	}{
		{"script is one argument", Exec{Command: "/bin/sh -c"}, "echo 'a  b'; true\nls",
			0, []string{"/bin/sh", "-c", "echo 'a  b'; true\nls"}, ""},
		{"empty command splits the script", Exec{}, "ls -l 'my dir'", 0, []string{"ls", "-l", "my dir"}, ""},
		{"sudo as non-root", Exec{Command: "sh -c", Sudo: true}, "x", 1000, []string{"sudo", "-E", "sh", "-c", "x"}, ""},
		{"sudo as root is not needed", Exec{Command: "sh -c", Sudo: true}, "x", 0, []string{"sh", "-c", "x"}, ""},
		{"blank", Exec{}, "  ", 0, nil, "nothing to run"},
		{"bad command", Exec{Command: "sh '-c"}, "x", 0, nil, "split exec.command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := argv(tt.exec, tt.script, tt.euid)
			checkErr(t, err, tt.wantErr)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("argv = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExecOverride runs commands under different outer execs and checks
// which interpreter and settings took effect.
func TestExecOverride(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		outer   Exec
		cmdExec string
		change  string
		want    string
		wantErr string
	}{
		{"default main exec is bash with pipefail", Exec{}, ``,
			`echo ${BASH_VERSION:+bash}; false | true`, "", "status 1"},
		{"default main exec runs bash", Exec{}, ``, `echo ${BASH_VERSION:+bash}`, "bash", ""},
		{"command exec overrides", shExec(), `{"command":"/usr/bin/bash -c"}`, `echo ${BASH_VERSION:+bash}`, "bash", ""},
		{"command exec blocked", Exec{AllowOverride: boolPtr(false), Command: "/bin/sh -c"},
			`{"command":"/usr/bin/bash -c","workDir":"/"}`, `echo ${BASH_VERSION:-sh} $(pwd)`, "sh " + mustGetwd(t), ""},
		{"workDir", shExec(), `{"workDir":"` + dir + `"}`, `pwd`, dir, ""},
		{"empty command runs the script directly", shExec(), `{"command":"","allowOverride":true}`, `echo 'a  b'`, "a  b", ""},
		{"no command at all runs argv", Exec{AllowOverride: boolPtr(true)}, ``, `echo "$HOME"`, "$HOME", ""},
		{"container not supported", shExec(), `{"containerImage":"alpine"}`, `true`, "",
			`command "a": containerImage "alpine": container execs are not supported yet`},
		{"missing workDir fails", shExec(), `{"workDir":"` + dir + `/nope"}`, `true`, "", `command "a": change: exec.workDir "` + dir + `/nope" is not a directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cmd := &Command{ID: "a", Always: true, Change: tt.change, Exec: execJSON(t, tt.cmdExec)}
			res := h.runRaw(Commands{cmd}, Options{Exec: tt.outer})
			checkErr(t, res.Err, tt.wantErr)
			if tt.wantErr == "" {
				if got := outputOf(t, res, "a", ModeChange); got != tt.want {
					t.Fatalf("output = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func mustGetwd(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getwd: %v", err)
	}
	return wd
}

func TestUserGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	tests := []struct {
		name, exec, want, wantErr string
	}{
		{"numeric user and group", `{"user":"65534","group":"65534"}`, "65534 65534", ""},
		{"user name takes its primary group", `{"user":"nobody"}`, "65534 " + primaryGID(t, "nobody"), ""},
		{"group only", `{"group":"65534"}`, "0 65534", ""},
		{"unknown numeric user needs a group", `{"user":"64999"}`, "", `exec.user "64999" has no passwd entry; set exec.group too`},
		{"unknown numeric user with group", `{"user":"64999","group":"64999"}`, "64999 64999", ""},
		{"unknown user name", `{"user":"no-such-user-xyz"}`, "", `exec.user "no-such-user-xyz"`},
		{"unknown group name", `{"group":"no-such-group-xyz"}`, "", `exec.group "no-such-group-xyz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cmd := &Command{ID: "a", Always: true, Change: "echo $(id -u) $(id -g)", Exec: execJSON(t, tt.exec)}
			res := h.run(Commands{cmd}, Options{})
			checkErr(t, res.Err, tt.wantErr)
			if tt.wantErr == "" {
				if got := outputOf(t, res, "a", ModeChange); got != tt.want {
					t.Fatalf("id = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func primaryGID(tb testing.TB, name string) string {
	tb.Helper()
	u, _, err := lookupUser(name)
	if err != nil || u == nil {
		tb.Skipf("user %s not available: %v", name, err)
	}
	return u.Gid
}

func TestCancel(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	cs := parse(t, `[{"id":"slow","always":true,"change":"sleep 30 & sleep 30; echo done"},{"id":"next","always":true,"change":"true"}]`)
	res := cs.Run(ctx, Options{Exec: shExec(), Env: map[string]string{"TRACE": h.trace}})
	if elapsed := time.Since(start); elapsed > 15*time.Second {
		t.Fatalf("Run took %v after cancel", elapsed)
	}
	checkErr(t, res.Err, `command "slow": change: context deadline exceeded`)
	if got, want := join(res.Changed), "slow"; got != want { // ran and failed
		t.Fatalf("Changed = %q, want %q", got, want)
	}
}

func TestCancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := parse(t, `[{"id":"a","always":true,"change":"true"}]`).Run(ctx, Options{Exec: shExec()})
	checkErr(t, res.Err, `command "a": not run: context canceled`)
	if len(res.Outputs) != 0 {
		t.Fatalf("Outputs = %+v, want none", res.Outputs)
	}
}

// TestBackgroundChild checks that a daemon started by a change, which keeps
// the output pipe open, does not block the run.
func TestBackgroundChild(t *testing.T) {
	h := newHarness(t)
	start := time.Now()
	res := h.run(parse(t, `[{"id":"a","always":true,"change":"echo started; sleep 5 &"}]`), Options{})
	checkErr(t, res.Err, "")
	if elapsed := time.Since(start); elapsed > 15*time.Second {
		t.Fatalf("Run took %v with a background child", elapsed)
	}
	if got, want := outputOf(t, res, "a", ModeChange), "started"; got != want {
		t.Fatalf("output = %q, want %q", got, want)
	}
}

func TestOutputCap(t *testing.T) {
	h := newHarness(t)
	res := h.run(parse(t, `[{"id":"a","always":true,"change":"head -c 16777316 /dev/zero | tr '\\0' a"}]`), Options{})
	checkErr(t, res.Err, "")
	out := outputOf(t, res, "a", ModeChange)
	if got, want := len(out), maxOutput+len("\n[output truncated: 100 bytes dropped]"); got != want {
		t.Fatalf("len(output) = %d, want %d", got, want)
	}
	if want := "\n[output truncated: 100 bytes dropped]"; !strings.HasSuffix(out, want) {
		t.Fatalf("output ends %q, want suffix %q", out[len(out)-60:], want)
	}
}

// TestRunRefusesContainerBeforeRunning checks that a container exec
// anywhere in the list stops the run before any script runs, including a
// command exec that the outer chain would ignore and commands outside the
// ParentIDs filter.
func TestRunRefusesContainerBeforeRunning(t *testing.T) {
	first := `{"id":"first","always":true,"change":"echo first >> $TRACE"}`
	tests := []struct {
		name    string
		outer   Exec
		list    string
		pids    []string
		wantErr string
	}{
		{"later command asks for a container", shExec(),
			`[` + first + `, {"id":"c","always":true,"change":"true","exec":{"containerImage":"alpine"}}]`, nil,
			`command "c": containerImage "alpine": container execs are not supported yet`},
		{"outer exec forbids overrides", Exec{AllowOverride: boolPtr(false), Command: "/bin/sh -c"},
			`[` + first + `, {"id":"c","always":true,"change":"true","exec":{"containerImage":"alpine"}}]`, nil,
			`command "c" exec asks for container image "alpine" but the outer exec chain does not allow overrides`},
		{"outer exec asks for a container", Exec{AllowOverride: boolPtr(true), Command: "/bin/sh -c", ContainerImage: "debian"},
			`[` + first + `]`, nil, `command "first": containerImage "debian"`},
		{"container command outside the filter", shExec(),
			`[` + first + `, {"id":"g","commands":[{"id":"c","always":true,"change":"true","exec":{"containerImage":"alpine"}}]}]`, []string{""},
			`command "c": containerImage "alpine"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.runRaw(parse(t, tt.list), Options{Exec: tt.outer, ParentIDs: tt.pids})
			checkErr(t, res.Err, tt.wantErr)
			if got := h.lines(); got != "" {
				t.Fatalf("trace = %q, want nothing run", got)
			}
			if len(res.Outputs) != 0 {
				t.Fatalf("outputs = %+v, want none", res.Outputs)
			}
		})
	}
}
