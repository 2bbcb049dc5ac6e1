package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// etchaConfig writes an --etcha-config file with body and returns its path.
func etchaConfig(t *testing.T, body string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "etcha.jsonnet")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPatternEventReload: key a fires etcha:hello (sources.a.eventsSend
// lets it through); key b receives it (sources.b.eventsReceive) and runs
// with ETCHA_SOURCE_TRIGGER=event, and its etcha:reload gives the child
// exactly one signal for that put. Key a-plain, not configured under
// sources, receives nothing (it would run between a and b, in name order,
// before b's signal). /metrics serves the etcha_* metrics of the pattern
// runs (trigger pull for keys, event for event runs) next to the
// dispenser_pattern_* ones.
func TestPatternEventReload(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	cfg := etchaConfig(t, `{sources: {a: {eventsSend: 'hello'}, b: {eventsReceive: ['hello']}}}`)
	trigger := func(file string, reload bool) string {
		on := ""
		if reload {
			on = ", onChange: ['etcha:reload']"
		}
		return fmt.Sprintf(`{run: [{id: 'write', always: true, change: 'printf %%s "$ETCHA_SOURCE_TRIGGER" >> %s'%s}]}`,
			filepath.Join(w.out, file), on)
	}
	put(t, s, "/app/patterns/b", k.sign(trigger("b", true)), "/app/patterns/a-plain", k.sign(trigger("a-plain", false)))
	addr := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"--etcha-config", cfg, "-t", w.target, "-s", "HUP", "--listen-http", addr}, childArgs(w.root, "serve")...)...)
	if got, _ := r.out.next(t, "ready"); got != "ready out/a-plain=pull,out/b=pull" {
		t.Fatalf("child started with %q, want both patterns run once (pull)", got)
	}
	put(t, s, "/app/files/warm-up", "1") // ends the start-up period in which signals are held and merged
	r.out.next(t, "HUP")

	put(t, s, "/app/patterns/a", k.sign(`{run: [{id: 'hi', always: true, change: 'printf %s v1 > `+
		filepath.Join(w.out, "a")+`', onChange: ['etcha:hello']}]}`))
	got, skipped := r.out.next(t, "HUP")
	noSignalIn(t, skipped)
	if want := "HUP out/a-plain=pull,out/a=v1,out/b=pullevent,target/warm-up=1"; got != want {
		t.Fatalf("after a's event the child saw %q, want %q", got, want)
	}
	put(t, s, "/app/files/x", "1")
	got, skipped = r.out.next(t, "HUP")
	noSignalIn(t, skipped) // b's reload was one signal
	if want := "HUP out/a-plain=pull,out/a=v1,out/b=pullevent,target/warm-up=1,target/x=1"; got != want {
		t.Fatalf("after a file change the child saw %q, want %q", got, want)
	}

	key := `public_key="[^"]*",remote_addr=""`
	waitMetricsMatch(t, "http://"+addr+"/metrics",
		`etcha_sources_total\{error="0",name="a",`+key+`,trigger="pull"\} 1`,
		`etcha_sources_total\{error="0",name="b",`+key+`,trigger="pull"\} 1`,
		`etcha_sources_total\{error="0",name="b",`+key+`,trigger="event"\} 1`,
		`etcha_sources_total\{error="0",name="a-plain",`+key+`,trigger="pull"\} 1`,
		`etcha_commands_total\{error="0",id="hi",mode="change",parent_id="",`+key+`,source="a"\} 1`,
		`etcha_sources_commands\{mode="change",name="b",`+key+`,trigger="event"\} 1`,
		`etcha_sources_accepted_iat_seconds\{name="a"\} [0-9.e+]+`,
		`dispenser_pattern_runs_total\{pattern="b"\} 2`,
	)
}

// waitMetricsMatch polls /metrics until every pattern matches a line.
func waitMetricsMatch(t *testing.T, url string, patterns ...string) {
	t.Helper()
	var res []*regexp.Regexp
	for _, p := range patterns {
		res = append(res, regexp.MustCompile(`(?m)^`+p+`$`))
	}
	deadline := time.Now().Add(waitLong)
	var missing []string
	var body string
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		_, body = get(t, url)
		missing = missing[:0]
		for _, re := range res {
			if !re.MatchString(body) {
				missing = append(missing, re.String())
			}
		}
		if len(missing) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls, bounded by the deadline
	}
	t.Fatalf("/metrics still lacks %q after %v; it has:\n%s", missing, waitLong, body)
}

// TestPatternExitIgnored: a pattern command that fires etcha:exit (and
// etcha:stdout) in dispenser: the output goes to dispenser's stdout, one
// warning says exit has no effect, and dispenser keeps running: the child
// is not stopped, later patterns run and file changes still signal it.
func TestPatternExitIgnored(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	put(t, s, "/app/files/a", "1")
	r := start(t, s, append([]string{"--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"-t", w.target, "-s", "HUP"}, childArgs(w.root, "serve")...)...)
	r.out.next(t, "ready")

	put(t, s, "/app/patterns/quit", k.sign(`{run: [{id: 'bye', always: true, change: 'echo said-bye', onChange: ['etcha:stdout', 'etcha:exit']}]}`))
	r.out.next(t, "said-bye")
	r.errs.containing(t, "etcha:exit has no effect in dispenser")
	put(t, s, "/app/patterns/web", k.sign(writePattern(filepath.Join(w.out, "web"), "after", true)))
	got, _ := r.out.next(t, "HUP")
	if got != "HUP out/web=after,target/a=1" {
		t.Fatalf("after etcha:exit a pattern with etcha:reload gave the child %q", got)
	}
	put(t, s, "/app/files/a", "2")
	if got, _ := r.out.next(t, "HUP"); got != "HUP out/web=after,target/a=2" {
		t.Fatalf("after etcha:exit a file change gave the child %q", got)
	}
	select {
	case err := <-r.done:
		t.Fatalf("dispenser returned (%v) after etcha:exit; log:\n%s", err, r.errs.String())
	default:
	}
	if n := countLines(r.errs.String(), "etcha:exit has no effect"); n != 1 {
		t.Fatalf("%d warnings about etcha:exit, want 1; log:\n%s", n, r.errs.String())
	}
}

// countLines counts the lines of s containing substr.
func countLines(s, substr string) int {
	return len(regexp.MustCompile(`(?m)^.*`+regexp.QuoteMeta(substr)+`.*$`).FindAllString(s, -1))
}

// TestOnceWaitsForEvents: with --once, dispenser exits after the events
// the pattern runs fired have been dispatched and their runs finished (as
// `etcha run -o`): s fires hello and bye; b (slow) receives hello and c
// receives bye. Without the wait, closing the engine while b's event run
// is under way drops the queued bye. The sender sorts after the receivers:
// patterns run in name order at start, and a source without a pattern yet
// is skipped by the events sent to it.
func TestOnceWaitsForEvents(t *testing.T) {
	s := etcdtest.Start(t)
	k := newSigner(t)
	w := newPatternWorld(t)
	cfg := etchaConfig(t, `{sources: {s: {eventsSend: 'hello|bye'}, b: {eventsReceive: ['hello']}, c: {eventsReceive: ['bye']}}}`)
	record := func(file, before string) string {
		return k.sign(fmt.Sprintf(`{run: [{id: 'rec', always: true, change: '%sprintf %%s "$ETCHA_SOURCE_TRIGGER" >> %s'}]}`,
			before, filepath.Join(w.out, file)))
	}
	put(t, s, "/app/patterns/s", k.sign(`{run: [{id: 'send', always: true, change: 'true', onChange: ['etcha:hello', 'etcha:bye']}]}`),
		"/app/patterns/b", record("b", "sleep 2; "), "/app/patterns/c", record("c", ""))
	r := start(t, s, "--prefix=/app/files", "--patterns=/app/patterns", "--verify-key", k.pub,
		"--etcha-config", cfg, "-t", w.target, "--once")
	if err := r.wait(t); err != nil {
		t.Fatalf("dispenser --once: %v; log:\n%s", err, r.errs.String())
	}
	if got, want := contents(w.out), "b=pullevent,c=pullevent"; got != want {
		t.Fatalf("after --once the patterns wrote %q, want %q; log:\n%s", got, want, r.errs.String())
	}
}
