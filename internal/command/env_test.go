package command

import (
	"strings"
	"testing"
)

// outputOf returns the output of the last script of id in phase.
func outputOf(tb testing.TB, res Result, id string, phase Mode) string {
	tb.Helper()
	for i := len(res.Outputs) - 1; i >= 0; i-- {
		if o := res.Outputs[i]; o.ID == id && o.Phase == phase {
			return o.Output
		}
	}
	tb.Fatalf("no %s output for %q in %+v", phase, id, res.Outputs)
	return ""
}

func TestEnvVars(t *testing.T) {
	show := func(names ...string) string {
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + "=${" + n + "-unset}"
		}
		return "echo " + strings.Join(parts, " ")
	}
	tests := []struct {
		name, js, id string
		wantErr      string
		phase        Mode
		mode         Mode
		want         string
	}{
		{name: "prefixed vars of earlier commands", id: "z", phase: ModeChange,
			js: `[{"id":"a","envPrefix":"A","check":"echo checked; exit 1","change":"echo '  changed  '"},
				{"id":"z","always":true,"change":"` + show("A", "A_CHECK", "A_CHANGE", "A_CHANGE_OUT", "_CHECK", "_CHANGE") + `"}]`,
			want: "A=checked A_CHECK=1 A_CHANGE=0 A_CHANGE_OUT=changed _CHECK=1 _CHANGE=unset"},
		{name: "own check visible to own change", id: "a", phase: ModeChange,
			js:   `[{"id":"a","envPrefix":"A","check":"echo c; false","change":"` + show("A", "A_CHECK", "A_CHANGE") + `"}]`,
			want: "A=c A_CHECK=1 A_CHANGE=unset"},
		{name: "bare vars show the latest command", id: "z", phase: ModeChange, wantErr: `command "b"`,
			js: `[{"id":"a","check":"true","change":"true"},
				{"id":"b","always":true,"change":"exit 1","onFail":["z"]},
				{"id":"z","change":"` + show("_CHECK", "_CHANGE", "_CHANGE_OUT") + `"}]`,
			want: "_CHECK=1 _CHANGE=1 _CHANGE_OUT=unset"},
		{name: "bare vars after a passing check", id: "z", phase: ModeCheck,
			js: `[{"id":"a","check":"true","change":"true"},
				{"id":"z","check":"` + show("_CHECK", "_CHANGE") + `"}]`,
			want: "_CHECK=0 _CHANGE=unset"},
		{name: "check passed", id: "z", phase: ModeChange,
			js: `[{"id":"a","envPrefix":"A","check":"echo ok","change":"true"},
				{"id":"z","always":true,"change":"` + show("A", "A_CHECK", "A_CHANGE") + `"}]`,
			want: "A=ok A_CHECK=0 A_CHANGE=unset"},
		{name: "no check, not always", id: "z", phase: ModeChange,
			js: `[{"id":"a","envPrefix":"A","change":"true"},
				{"id":"z","always":true,"change":"` + show("A", "A_CHECK") + `"}]`,
			want: "A=unset A_CHECK=0"},
		{name: "always without check", id: "z", phase: ModeChange,
			js: `[{"id":"a","envPrefix":"A","always":true,"change":"` + show("A_CHECK") + `"},
				{"id":"z","always":true,"change":"` + show("A_CHECK", "A_CHANGE_OUT") + `"}]`,
			want: "A_CHECK=1 A_CHANGE_OUT=A_CHECK=1"},
		{name: "triggered without check", id: "b", phase: ModeChange,
			js: `[{"id":"a","always":true,"change":"true","onChange":["b"]},
				{"id":"b","envPrefix":"B","change":"` + show("B_CHECK") + `"}]`,
			want: "B_CHECK=1"},
		{name: "failed change", id: "z", phase: ModeChange, wantErr: "status 9",
			js: `[{"id":"a","envPrefix":"A","always":true,"change":"echo bad; exit 9","onFail":["z"]},
				{"id":"z","change":"` + show("A_CHANGE", "A_CHANGE_OUT") + `"}]`,
			want: "A_CHANGE=1 A_CHANGE_OUT=bad"},
		{name: "remove vars", id: "a", phase: ModeRemove, mode: ModeRemove,
			js: `[{"id":"a","always":true,"remove":"` + show("B_REMOVE", "B_REMOVE_OUT", "_REMOVE") + `"},
				{"id":"b","envPrefix":"B","always":true,"remove":"echo gone"},
				{"id":"c","always":true,"remove":"true"}]`,
			want: "B_REMOVE=0 B_REMOVE_OUT=gone _REMOVE=0"},
		{name: "context env", id: "a", phase: ModeChange,
			js:   `[{"id":"a","always":true,"change":"` + show("ETCHA_EVENT_NAME") + `"}]`,
			want: "ETCHA_EVENT_NAME=pull"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.run(parse(t, tt.js), Options{Mode: tt.mode, Env: map[string]string{"ETCHA_EVENT_NAME": "pull"}})
			checkErr(t, res.Err, tt.wantErr)
			if got := outputOf(t, res, tt.id, tt.phase); got != tt.want {
				t.Fatalf("output = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExpansion(t *testing.T) {
	js := `[{"id":"a","envPrefix":"A","check":"echo one; false","change":"true"},
		{"id":"b","always":true,"exec":{"env":{"FROM_EXEC":"ex"}},
		 "change":"printf '%s|' '${A}' '$A' '${UNDEFINED}' '${A:-x}' '${FROM_EXEC}' '${EXTRA}' \"${UNDEFINED}\"; cat",
		 "stdin":"in=${A_CHECK}"}]`
	h := newHarness(t)
	res := h.run(parse(t, js), Options{Env: map[string]string{"EXTRA": "ctx"}})
	checkErr(t, res.Err, "")
	got := outputOf(t, res, "b", ModeChange)
	if want := "one|$A|${UNDEFINED}|${A:-x}|ex|ctx||in=1"; got != want {
		t.Fatalf("output = %q, want %q", got, want)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "B_2": "two", "E": "",
		"ETCHA_WEBHOOK_QUERY": "$(touch x)", "ETCHA_WEBHOOK_BODY": "b", "ETCHA_EVENT_OUTPUT": "`id`",
		"ETCHA_EVENT_NAME": "ev", "ETCHA_WEBHOOKX": "hook"}
	tests := []struct{ in, want string }{
		{"${A}", "1"},
		{"x${A}y${B_2}z", "x1ytwoz"},
		{"${E}.", "."},
		{"$A ${A", "$A ${A"},
		{"${C} ${2A} ${A-1}", "${C} ${2A} ${A-1}"},
		{"$${A}", "$1"},
		{"${${A}}", "${1}"},
		// Input from outside the signed pattern stays a variable for the shell.
		{"echo ${ETCHA_WEBHOOK_QUERY} ${ETCHA_WEBHOOK_BODY} ${ETCHA_EVENT_OUTPUT}",
			"echo ${ETCHA_WEBHOOK_QUERY} ${ETCHA_WEBHOOK_BODY} ${ETCHA_EVENT_OUTPUT}"},
		{"${ETCHA_EVENT_NAME} ${ETCHA_WEBHOOKX}", "ev hook"},
	}
	for _, tt := range tests {
		if got := expand(tt.in, env); got != tt.want {
			t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStdin(t *testing.T) {
	h := newHarness(t)
	res := h.run(parse(t, `[{"id":"a","always":true,"check":"cat >>$TRACE; false","change":"cat >>$TRACE","stdin":"line-${X}\n"}]`),
		Options{Env: map[string]string{"X": "1"}})
	checkErr(t, res.Err, "")
	if got, want := h.lines(), "line-1,line-1"; got != want {
		t.Fatalf("trace = %q, want %q", got, want)
	}
}

// TestEnvInherit checks that envInherit takes Options.Environ, never the
// process environment, which is set here to something else.
func TestEnvInherit(t *testing.T) {
	t.Setenv("COMMAND_TEST_INHERITED", "from-process")
	environ := []string{"COMMAND_TEST_INHERITED=from-options", "PATH=/opt/x:/bin", "NOEQUALS"}
	tests := []struct {
		name, exec string
		environ    []string
		want       string
	}{
		{"off by default", `{}`, environ, "unset " + defaultPath},
		{"on", `{"envInherit":true}`, environ, "from-options /opt/x:/bin"},
		{"on with nil Environ", `{"envInherit":true}`, nil, "unset " + defaultPath},
		{"exec env wins", `{"envInherit":true,"env":{"COMMAND_TEST_INHERITED":"from-exec"}}`, environ, "from-exec /opt/x:/bin"},
		{"exec env sets PATH", `{"env":{"PATH":"/bin"}}`, environ, "unset /bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			js := `[{"id":"a","always":true,"exec":` + tt.exec + `,"change":"echo ${COMMAND_TEST_INHERITED-unset} $PATH"}]`
			res := h.run(parse(t, js), Options{Environ: tt.environ})
			checkErr(t, res.Err, "")
			if got := outputOf(t, res, "a", ModeChange); got != tt.want {
				t.Fatalf("output = %q, want %q", got, tt.want)
			}
		})
	}
}
