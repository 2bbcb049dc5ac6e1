package command

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name, js string
		want     []string // substrings of the error, none = valid
	}{
		{name: "valid", js: `[
			{"id":"a","envPrefix":"A_1","onChange":["b","etcha:x","c.*"],"onFail":"b"},
			{"id":"b","onRemove":["a"]},
			{"id":"c1"},
			{"id":"g","onChange":["d"],"commands":[{"id":"x","onChange":["y"]},{"id":"y","onRemove":"x"}]},
			{"id":"d"},
			{"id":"a","onRemove":["a.*"]}]`},
		{name: "repeated ids allowed", js: `[{"id":"a","onChange":"b"},{"id":"b"},{"id":"b"}]`},
		{name: "empty id", js: `[{"id":"a"},{"change":"x"}]`,
			want: []string{"command #2 of the top-level list: id is empty; set a non-empty id"}},
		{name: "empty id in group", js: `[{"id":"g","commands":[{"id":""}]}]`,
			want: []string{`command #1 in group "g": id is empty`}},
		{name: "bad envPrefix", js: `[{"id":"a","envPrefix":"1A"},{"id":"b","envPrefix":"A-B"}]`,
			want: []string{`command "a": envPrefix "1A" is invalid`, `command "b": envPrefix "A-B" is invalid`}},
		{name: "onChange target before", js: `[{"id":"d"},{"id":"b","onChange":["d"]}]`,
			want: []string{`command "b": onChange target "d" not found after it in the same command list; targets must be later siblings`}},
		{name: "onChange target outside scope", js: `[{"id":"a","commands":[{"id":"b","onChange":["d"]},{"id":"c"}]},{"id":"d"}]`,
			want: []string{`command "b": onChange target "d" not found after it`}},
		{name: "onFail target before", js: `[{"id":"d"},{"id":"b","onFail":"d"}]`,
			want: []string{`command "b": onFail target "d" not found after it`}},
		{name: "onRemove target after", js: `[{"id":"b","onRemove":["d"]},{"id":"d"}]`,
			want: []string{`command "b": onRemove target "d" not found before it in the same command list; targets must be earlier siblings`}},
		{name: "self target", js: `[{"id":"a","onChange":["a"]},{"id":"a"}]`,
			want: []string{`command "a": onChange target "a" is the command itself`}},
		{name: "regexp matches only self", js: `[{"id":"a","onChange":["."]}]`,
			want: []string{`command "a": onChange target "." not found after it`}},
		{name: "invalid regexp", js: `[{"id":"a","onChange":["(x"]},{"id":"b"}]`,
			want: []string{`command "a": onChange target "(x" is neither a sibling id nor a valid regexp`}},
		{name: "group target", js: `[{"id":"a","onChange":["g"]},{"id":"g","commands":[]}]`,
			want: []string{`command "a": onChange target "g" matches group "g"; groups cannot be targets`}},
		{name: "group target by regexp", js: `[{"id":"a","onChange":["g.*"]},{"id":"g1"},{"id":"g2","commands":[]}]`,
			want: []string{`matches group "g2"`}},
		{name: "empty event name", js: `[{"id":"a","onChange":["etcha:"]}]`,
			want: []string{`command "a": onChange entry "etcha:" has no event name`}},
		{name: "errors in nested groups are all reported", js: `[
			{"id":"g","commands":[{"id":"h","commands":[{"id":"x","onChange":"nope"}]}]},
			{"id":"y","onRemove":"nope"}]`,
			want: []string{`command "x": onChange target "nope"`, `command "y": onRemove target "nope"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parse(t, tt.js).Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("Validate() = %v, want containing %q", err, w)
				}
			}
		})
	}
}

func TestValidateNilElement(t *testing.T) {
	err := Commands{{ID: "a"}, nil}.Validate()
	if got, want := errText(err), "command #2 of the top-level list is null"; !strings.Contains(got, want) {
		t.Fatalf("Validate() = %q, want containing %q", got, want)
	}
}
