package command

import (
	"testing"
)

func TestDiff(t *testing.T) {
	tests := []struct {
		name, old, new      string
		wantBefore, wantAft string
	}{
		{name: "tutorial: replaced pattern",
			old:        `[{"id":"write a file","always":true,"change":"w"},{"id":"copy file","change":"c"}]`,
			new:        `[{"id":"write a new file","always":true,"change":"w2"}]`,
			wantBefore: "write a file,copy file"},
		{name: "same pattern removes nothing",
			old: `[{"id":"a","change":"x"},{"id":"g","commands":[{"id":"b","change":"y"}]}]`,
			new: `[{"id":"a","change":"x"},{"id":"g","commands":[{"id":"b","change":"y"}]}]`},
		{name: "changed change string",
			old:        `[{"id":"a","change":"v1"},{"id":"b","change":"v1"}]`,
			new:        `[{"id":"a","change":"v2"},{"id":"b","change":"v2","changeIgnore":true}]`,
			wantBefore: "a"},
		{name: "old changeIgnore does not count",
			old:        `[{"id":"a","change":"v1","changeIgnore":true}]`,
			new:        `[{"id":"a","change":"v2"}]`,
			wantBefore: "a"},
		{name: "check change alone keeps the command",
			old: `[{"id":"a","check":"c1","change":"x"}]`,
			new: `[{"id":"a","check":"c2","change":"x"}]`},
		{name: "nested: only dropped children, group kept",
			old:        `[{"id":"g","commands":[{"id":"x","change":"1"},{"id":"y","change":"1"},{"id":"h","commands":[{"id":"z"}]}]}]`,
			new:        `[{"id":"g","commands":[{"id":"y","change":"1"}]}]`,
			wantBefore: "g(x,h(z))"},
		{name: "whole group dropped",
			old:        `[{"id":"g","commands":[{"id":"x"}]},{"id":"k"}]`,
			new:        `[{"id":"k"}]`,
			wantBefore: "g(x)"},
		{name: "same id in another scope does not match",
			old:        `[{"id":"g","commands":[{"id":"x"}]}]`,
			new:        `[{"id":"x"},{"id":"g","commands":[]}]`,
			wantBefore: "g(x)"},
		{name: "group became command",
			old:        `[{"id":"g","commands":[{"id":"x"}]}]`,
			new:        `[{"id":"g"}]`,
			wantBefore: "g(x)"},
		{name: "repeated ids match by occurrence",
			old:        `[{"id":"a","change":"1"},{"id":"a","change":"2"},{"id":"a","change":"3"}]`,
			new:        `[{"id":"a","change":"1"},{"id":"a","change":"2b"}]`,
			wantBefore: "a,a"},
		{name: "removeAfter from old",
			old:        `[{"id":"a","removeAfter":true},{"id":"b"},{"id":"g","commands":[{"id":"x","removeAfter":true},{"id":"y"}]}]`,
			new:        `[{"id":"b","removeAfter":true}]`,
			wantBefore: "g(y)", wantAft: "a,g(x)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := Diff(parse(t, tt.old), parse(t, tt.new))
			if got := ids(before); got != tt.wantBefore {
				t.Fatalf("before = %q, want %q", got, tt.wantBefore)
			}
			if got := ids(after); got != tt.wantAft {
				t.Fatalf("after = %q, want %q", got, tt.wantAft)
			}
		})
	}
}

// TestDiffPrunesTriggers checks that dropped commands keep only triggers
// that resolve among the dropped set, and that old is left unmodified.
func TestDiffPrunesTriggers(t *testing.T) {
	old := parse(t, `[
		{"id":"svc","remove":"r"},
		{"id":"kept","change":"k"},
		{"id":"file","remove":"r","onRemove":["svc","kept","etcha:gone"],"onChange":["kept2"]},
		{"id":"kept2","change":"k"}]`)
	new := parse(t, `[{"id":"kept","change":"k"},{"id":"kept2","change":"k"}]`)
	before, _ := Diff(old, new)
	if got, want := ids(before), "svc,file"; got != want {
		t.Fatalf("before = %q, want %q", got, want)
	}
	if err := before.Validate(); err != nil {
		t.Fatalf("Validate(before) = %v", err)
	}
	if got, want := join(before[1].OnRemove), "svc,etcha:gone"; got != want {
		t.Fatalf("OnRemove = %q, want %q", got, want)
	}
	if got, want := join(old[2].OnRemove), "svc,kept,etcha:gone"; got != want {
		t.Fatalf("old OnRemove changed to %q, want %q", got, want)
	}
	if got := len(before[1].OnChange); got != 0 {
		t.Fatalf("OnChange = %q, want none", before[1].OnChange)
	}
}

// TestDiffRun runs a diff removal end to end: old definitions, reverse old
// order, check-less commands removed.
func TestDiffRun(t *testing.T) {
	h := newHarness(t)
	old := scripted(t, `[
		{"id":"write a file","always":true,"change":"@w","remove":"@remove-write","onChange":["copy file"]},
		{"id":"copy file","change":"@c","remove":"@remove-copy"},
		{"id":"absent","check":"false","remove":"@remove-absent"}]`)
	new := scripted(t, `[{"id":"write a new file","always":true,"change":"@w2"}]`)
	before, after := Diff(old, new)
	res := h.run(before, Options{Mode: ModeDiffRemove})
	checkErr(t, res.Err, "")
	if got, want := join(res.Removed), "copy file,write a file"; got != want {
		t.Fatalf("Removed = %q, want %q", got, want)
	}
	if got, want := h.lines(), "remove-copy,remove-write"; got != want {
		t.Fatalf("trace = %q, want %q", got, want)
	}
	if len(after) != 0 {
		t.Fatalf("after = %q, want none", ids(after))
	}
}

// TestDiffTriggerKeepsOldTarget is issue 7 item 18: "a.b" targeted the
// command a.b (exact match in the old scope); a.b is kept, so the entry
// must not fall back to the regexp a.b and hit axb, which nothing targeted.
func TestDiffTriggerKeepsOldTarget(t *testing.T) {
	h := newHarness(t)
	old := scripted(t, `[
		{"id":"a.b","change":"x","remove":"@remove-ab"},
		{"id":"axb","check":"false","remove":"@remove-axb"},
		{"id":"c","remove":"@remove-c","onRemove":["a.b"]}]`)
	new := scripted(t, `[{"id":"a.b","change":"x","remove":"@remove-ab"}]`)
	before, after := Diff(old, new)
	if got, want := ids(before)+"|"+ids(after), "axb,c|"; got != want {
		t.Fatalf("before|after = %q, want %q", got, want)
	}
	if got := before[1].OnRemove; len(got) != 0 {
		t.Fatalf("c's OnRemove = %q, want none: its only target a.b is kept", got)
	}
	res := h.run(before, Options{Mode: ModeDiffRemove})
	checkErr(t, res.Err, "")
	if got, want := h.lines(), "remove-c"; got != want {
		t.Fatalf("trace = %q, want %q", got, want)
	}
	if got, want := join(res.Removed), "c"; got != want {
		t.Fatalf("Removed = %q, want %q", got, want)
	}
}

// TestDiffTriggerSurvivors checks that an entry is kept only when some of
// its old targets are dropped too, and then targets only those.
func TestDiffTriggerSurvivors(t *testing.T) {
	old := parse(t, `[
		{"id":"a.b","remove":"r"},
		{"id":"x1","remove":"r"},
		{"id":"x2","remove":"r"},
		{"id":"x3","remove":"r"},
		{"id":"c","remove":"r","onRemove":["a.b","x[12]"]},
		{"id":"a.b","remove":"r2"},
		{"id":"axb","remove":"r"},
		{"id":"d","remove":"r","onRemove":["a.b"]}]`)
	new := parse(t, `[{"id":"x2","remove":"r"},{"id":"a.b","remove":"r2"},{"id":"a.b","remove":"r2"}]`)
	before, _ := Diff(old, new)
	if got, want := ids(before), "x1,x3,c,axb,d"; got != want {
		t.Fatalf("before = %q, want %q", got, want)
	}
	if err := before.Validate(); err != nil {
		t.Fatalf("Validate(before) = %v", err)
	}
	// c: a.b (both old occurrences) kept → dropped; x[12] keeps x1 only.
	if got, want := join(before[2].OnRemove), "x[12]"; got != want {
		t.Fatalf("c OnRemove = %q, want %q", got, want)
	}
	// d: a.b exact in old; both kept → no entry, although axb matches a.b.
	if got := before[4].OnRemove; len(got) != 0 {
		t.Fatalf("d OnRemove = %q, want none", got)
	}
}
