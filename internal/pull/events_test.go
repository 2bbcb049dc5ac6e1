package pull

import (
	"testing"

	"github.com/dispenser-dev/dispenser/internal/watch"
)

// TestEventsAfterResync checks the rule Watch applies to Reset batches: a
// value read again after a resync is reported only if it differs, in value
// or existence, from the last one reported.
func TestEventsAfterResync(t *testing.T) {
	k := &keyState{f: New(Options{MaxSize: 5}), key: "/p/app"}
	app := func(v string) watch.Change { return watch.Change{Value: []byte(v)} }
	other := watch.Change{Key: "2", Value: []byte("x")}
	for i, step := range []struct {
		b    watch.Batch
		want []Event
	}{
		{watch.Batch{Rev: 5, Reset: true, Cause: "initial", Changes: []watch.Change{other}},
			[]Event{{Rev: 5, Deleted: true, Cause: "initial"}}},
		{watch.Batch{Rev: 6, Reset: true, Cause: "watch-closed", Changes: []watch.Change{other}}, nil},
		{watch.Batch{Rev: 7, Changes: []watch.Change{app("a")}}, []Event{{Rev: 7, Value: "a"}}},
		{watch.Batch{Rev: 8, Reset: true, Cause: "compacted: x", Changes: []watch.Change{app("a"), other}}, nil},
		{watch.Batch{Rev: 9, Changes: []watch.Change{other}}, nil},
		{watch.Batch{Rev: 10, Reset: true, Cause: "no-leader: x", Changes: []watch.Change{app("b"), other}},
			[]Event{{Rev: 10, Value: "b", Cause: "no-leader: x"}}},
		{watch.Batch{Rev: 11, Changes: []watch.Change{app("b")}}, []Event{{Rev: 11, Value: "b"}}},
		{watch.Batch{Rev: 12, Reset: true, Cause: "compacted: y", Changes: []watch.Change{other}},
			[]Event{{Rev: 12, Deleted: true, Cause: "compacted: y"}}},
		{watch.Batch{Rev: 13, Changes: []watch.Change{{Delete: true}}}, []Event{{Rev: 13, Deleted: true}}},
	} {
		got := k.events(step.b)
		if len(got) != len(step.want) {
			t.Fatalf("step %d: events = %+v, want %+v", i, got, step.want)
		}
		for j := range got {
			if got[j] != step.want[j] {
				t.Fatalf("step %d: events = %+v, want %+v", i, got, step.want)
			}
		}
	}
	got := k.events(watch.Batch{Rev: 14, Changes: []watch.Change{app("123456")}})
	if len(got) != 1 || got[0].Value != "" || got[0].Err == nil || got[0].Rev != 14 {
		t.Fatalf("events of a value over MaxSize = %+v, want one with Err set and no value", got)
	}
}
