package etcha

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRenderSysInfoLazy: sysinfo is gathered only by a render whose
// pattern calls getConfig(), once per render, and it wins over a sysinfo
// set in the config's vars (spec §5.3: automatic vars come last).
func TestRenderSysInfoLazy(t *testing.T) {
	a, out := newApp(t, `{vars: {sysinfo: 'from config', other: 'x'}}`)
	var calls atomic.Int32
	a.SysInfo = func() map[string]any {
		calls.Add(1)
		return map[string]any{"hostname": "lazy-host"}
	}
	ctx := context.Background()
	if err := a.Render(ctx, writeFile(t, t.TempDir(), "plain.jsonnet", `{run: [{id: 'a', change: 'true'}]}`)); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("a pattern without getConfig() gathered sysinfo %d times, want 0", n)
	}
	out.Reset()
	p := writeFile(t, t.TempDir(), "cfg.jsonnet", `local c = std.native('getConfig')();
{run: [{id: c.vars.sysinfo.hostname + ' ' + c.vars.other, change: 'true'}, {id: std.native('getConfig')().vars.sysinfo.hostname, change: 'true'}]}`)
	if err := a.Render(ctx, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"id": "lazy-host x"`) {
		t.Errorf("getConfig().vars.sysinfo: render printed %s, want the gathered hostname over the config's var", out.String())
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("a render calling getConfig() twice gathered sysinfo %d times, want 1", n)
	}
}
