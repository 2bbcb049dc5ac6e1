package command

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// ids renders a decoded list as "a,b,g(c,d)" for compact comparisons.
func ids(cs Commands) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		s := c.ID
		if c.IsGroup() {
			s += "(" + ids(c.Commands) + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func TestDecodeTolerance(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", `[{"id":"a"},{"id":"b"}]`, "a,b"},
		{"null elements", `[null,{"id":"a"},null]`, "a"},
		{"nested arrays", `[[{"id":"a"},[[{"id":"b"}]],null],{"id":"c"}]`, "a,b,c"},
		{"group", `[{"id":"g","commands":[[{"id":"a"}],null,{"id":"b"}]}]`, "g(a,b)"},
		{"empty group", `[{"id":"g","commands":[null]}]`, "g()"},
		{"null list", `null`, ""},
		{"empty list", `[]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs Commands
			if err := json.Unmarshal([]byte(tt.in), &cs); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got := ids(cs); got != tt.want {
				t.Fatalf("ids = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeFields(t *testing.T) {
	in := `{"id":"a","check":null,"change":"c","remove":null,"stdin":null,"envPrefix":null,
		"onChange":"b","onFail":[null,"x",null,"y"],"onRemove":null,"exec":{"command":"/bin/sh -c","allowOverride":true}}`
	var c Command
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if got, want := c.Change, "c"; got != want {
		t.Fatalf("Change = %q, want %q", got, want)
	}
	if c.Check != "" || c.Remove != "" || c.Stdin != "" || c.EnvPrefix != "" {
		t.Fatalf("null strings not empty: %+v", c)
	}
	if got, want := c.OnChange, []string{"b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OnChange = %q, want %q", got, want)
	}
	if got, want := c.OnFail, []string{"x", "y"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OnFail = %q, want %q", got, want)
	}
	if c.OnRemove != nil {
		t.Fatalf("OnRemove = %q, want nil", c.OnRemove)
	}
	if c.Exec == nil || c.Exec.Command != "/bin/sh -c" || c.Exec.AllowOverride == nil || !*c.Exec.AllowOverride {
		t.Fatalf("Exec = %+v", c.Exec)
	}
	if c.IsGroup() {
		t.Fatalf("IsGroup() = true for a command without commands")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"string element", `["a"]`, "not a command object"},
		{"number element", `[1]`, "not a command object"},
		{"not a list", `{"id":"a"}`, "must be an array"},
		{"bad onChange", `[{"id":"a","onChange":3}]`, `command "a": onChange must be a string or a list of strings`},
		{"bad onRemove element", `[{"id":"a","onRemove":[3]}]`, `command "a": onRemove must be a string or a list of strings`},
		{"id not a string", `[{"id":5}]`, `command: id must be a string, got a number`},
		{"check not a string", `[{"id":"x","check":["a"]}]`, `command "x": check must be a string, got an array`},
		{"always not a boolean", `[{"id":"x","always":"yes"}]`, `command "x": always must be a boolean (true or false), got a string`},
		{"exec not an object", `[{"id":"x","exec":"sh"}]`, `command "x": exec must be an object, got a string`},
		{"exec field", `[{"id":"x","exec":{"sudo":1}}]`, `command "x": exec.sudo must be a boolean (true or false), got a number`},
		{"commands not a list", `[{"id":"g","commands":"x"}]`, `command "g": command list must be an array of commands, got a string`},
		{"deep nesting", strings.Repeat("[", 200) + strings.Repeat("]", 200), "nested deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs Commands
			err := json.Unmarshal([]byte(tt.in), &cs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Unmarshal error = %v, want containing %q", err, tt.want)
			}
			if msg := err.Error(); strings.Contains(msg, "Go ") || strings.Contains(msg, "plain") {
				t.Fatalf("Unmarshal error %q shows Go internals", msg)
			}
		})
	}
}

func TestDecodeExecPointer(t *testing.T) {
	var e *Exec
	if err := json.Unmarshal([]byte(`{"user":"nobody","env":{"A":"1"}}`), &e); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if e == nil || e.User != "nobody" || e.Env["A"] != "1" {
		t.Fatalf("Exec = %+v", e)
	}
}
