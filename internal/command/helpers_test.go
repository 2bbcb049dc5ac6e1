package command

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parse decodes a JSON command list, failing the test on error.
func parse(tb testing.TB, js string) Commands {
	tb.Helper()
	var cs Commands
	if err := json.Unmarshal([]byte(js), &cs); err != nil {
		tb.Fatalf("parse %s: %v", js, err)
	}
	return cs
}

// harness runs command lists with /bin/sh and a trace file that scripts
// append to via $TRACE.
type harness struct {
	tb    testing.TB
	trace string
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	return &harness{tb: tb, trace: filepath.Join(tb.TempDir(), "trace")}
}

func shExec() Exec {
	return Exec{AllowOverride: boolPtr(true), Command: "/bin/sh -c"}
}

// run runs cs under opts with $TRACE set and a 30 s deadline. A zero
// opts.Exec becomes /bin/sh -c with overrides allowed.
func (h *harness) run(cs Commands, opts Options) Result {
	h.tb.Helper()
	if opts.Exec.AllowOverride == nil && opts.Exec.Command == "" {
		opts.Exec = shExec()
	}
	return h.runRaw(cs, opts)
}

// runRaw is run without the /bin/sh default exec.
func (h *harness) runRaw(cs Commands, opts Options) Result {
	h.tb.Helper()
	env := map[string]string{"TRACE": h.trace}
	for k, v := range opts.Env {
		env[k] = v
	}
	opts.Env = env
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.Run(ctx, opts)
}

// lines returns the trace file's lines joined by ",", "" when absent.
func (h *harness) lines() string {
	h.tb.Helper()
	b, err := os.ReadFile(h.trace)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		h.tb.Fatalf("read trace: %v", err)
	}
	return strings.Join(strings.Fields(string(b)), ",")
}

func join(ss []string) string { return strings.Join(ss, ",") }

// eventsString renders events as name/id/output triples.
func eventsString(evs []Event) string {
	parts := make([]string, 0, len(evs))
	for _, e := range evs {
		parts = append(parts, e.Name+"/"+e.ID+"/"+e.Output)
	}
	return strings.Join(parts, ",")
}

// errText is err's message, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkErr fails unless err matches want: "" means nil, otherwise a
// substring of the message.
func checkErr(tb testing.TB, err error, want string) {
	tb.Helper()
	switch {
	case want == "" && err != nil:
		tb.Fatalf("err = %v, want nil", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		tb.Fatalf("err = %v, want containing %q", err, want)
	}
}
