package command

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
)

// Every process the package runs, a script or Capture, starts through the
// StartHook, which sees its pid, and is released once it has been waited
// for; a hook that fails stops the run with its error.
func TestStartHook(t *testing.T) {
	var mu sync.Mutex
	started, released := map[int]bool{}, map[int]bool{}
	SetStartHook(func(start func() (int, error)) (func(), error) {
		pid, err := start()
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		started[pid] = true
		return func() {
			mu.Lock()
			defer mu.Unlock()
			released[pid] = true
		}, nil
	})
	t.Cleanup(func() { SetStartHook(nil) })
	ctx := context.Background()

	check := func(what, out string) {
		t.Helper()
		pid, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("%s printed %q, want its pid", what, out)
		}
		mu.Lock()
		defer mu.Unlock()
		if !started[pid] || !released[pid] {
			t.Errorf("%s (pid %d): started through the hook %v, released %v; want both", what, pid, started[pid], released[pid])
		}
	}
	out, err := Capture(ctx, Exec{}, "sh -c 'echo $$'", nil, nil)
	if err != nil {
		t.Fatalf("Capture = %v", err)
	}
	check("Capture", out)
	out, code, err := script{text: "echo $$; exit 4", exec: Exec{Command: "sh -c"}}.run(ctx)
	if err != nil || code != 4 {
		t.Fatalf("script run = %q, %d, %v; want exit code 4", out, code, err)
	}
	check("script", out)

	refused := errors.New("refused by hook")
	SetStartHook(func(func() (int, error)) (func(), error) { return nil, refused })
	if _, err := Capture(ctx, Exec{}, "true", nil, nil); !errors.Is(err, refused) {
		t.Errorf("Capture with a failing hook = %v, want %v", err, refused)
	}
}
