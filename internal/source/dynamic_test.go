package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestAddAfterNew: a source added after New is unknown before, receives and
// runs after, and is listed in name order; adding it twice is an error; a
// second engine on the same state directory restores it on Add; Add after
// Close is ErrClosed.
func TestAddAfterNew(t *testing.T) {
	v := newEnv(t)
	e := v.engine(Options{}, Config{Name: "m"})
	jwt := v.sign(logPattern("a"))
	var unknown *UnknownSourceError
	if _, err := e.Receive(t.Context(), "web", jwt, Origin{Trigger: TriggerPull}); !errors.As(err, &unknown) {
		t.Fatalf("Receive before Add: err = %v, want *UnknownSourceError", err)
	}
	for _, n := range []string{"web", "a"} {
		if err := e.Add(t.Context(), Config{Name: n}); err != nil {
			t.Fatalf("Add(%s): %v", n, err)
		}
	}
	if got, want := e.Names(), []string{"a", "m", "web"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if r := receive(t, e, "web", jwt, Origin{Trigger: TriggerPull}); r.Status != StatusRan || r.Err != nil {
		t.Fatalf("Receive after Add: %s %v", r.Status, r.Err)
	}
	if b, err := os.ReadFile(filepath.Join(v.dir, "log")); err != nil || string(b) != "a\n" {
		t.Fatalf("log = %q, %v; want the pattern to have run once", b, err)
	}
	if err := e.Add(t.Context(), Config{Name: "web"}); err == nil {
		t.Error("adding web twice: no error")
	}
	if err := e.Add(t.Context(), Config{}); err == nil {
		t.Error("adding an empty name: no error")
	}

	e2 := v.engine(Options{})
	if err := e2.Add(t.Context(), Config{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if cur, _ := e2.Current("web"); cur != jwt {
		t.Errorf("Add on a second engine did not restore the saved JWT: current %q", cur)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e2.Add(t.Context(), Config{Name: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: err = %v, want ErrClosed", err)
	}
}
