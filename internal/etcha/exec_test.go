package etcha

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExecChainContainers checks that `local` refuses a container exec
// anywhere in the chain before any command runs, and that an ignored
// layer is named in the warning (spec §2.9).
func TestExecChainContainers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      string // added to baseConfig
		pattern  string // Jsonnet fields besides run
		cmdExec  string // exec of the second command
		source   string
		wantErr  string
		wantWarn string
	}{
		{name: "command container", cmdExec: `{containerImage: 'alpine'}`,
			wantErr: `command "second": containerImage "alpine": container execs are not supported yet`},
		{name: "command container refused by exec", cfg: `{exec+: {allowOverride: false}}`, cmdExec: `{containerImage: 'alpine'}`,
			wantErr: `command "second" exec asks for container image "alpine" but the outer exec chain does not allow overrides`},
		{name: "source container refused by exec", cfg: `{exec+: {allowOverride: false}, sources: {web: {exec: {containerImage: 'alpine'}}}}`, source: "web",
			wantErr: `sources.web.exec asks for container image "alpine" but exec does not allow overrides`},
		{name: "runExec container refused by source", cfg: `{sources: {web: {exec: {user: 'root'}}}}`, source: "web", pattern: `runExec: {containerImage: 'alpine'},`,
			wantErr: `runExec asks for container image "alpine" but sources.web.exec does not allow overrides`},
		{name: "runExec ignored", cfg: `{exec+: {allowOverride: false}}`, pattern: `runExec: {workDir: '/'},`,
			wantWarn: "runExec ignored with all later exec layers: exec does not allow overrides; set allowOverride: true on exec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			trace := filepath.Join(dir, "trace")
			second := `{id: 'second', always: true, change: 'true'}`
			if tc.cmdExec != "" {
				second = fmt.Sprintf(`{id: 'second', always: true, change: 'true', exec: %s}`, tc.cmdExec)
			}
			p := writeFile(t, dir, "p.jsonnet", fmt.Sprintf(`{%s run: [{id: 'first', always: true, change: 'echo ran >> %s'}, %s]}`, tc.pattern, trace, second))
			cfg := baseConfig
			if tc.cfg != "" {
				cfg += "+" + tc.cfg
			}
			a, _ := newApp(t, cfg)
			var logs bytes.Buffer
			a.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			err := a.Local(context.Background(), LocalOptions{Target: p, Source: tc.source})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(logs.String(), tc.wantWarn) {
					t.Fatalf("log = %q, want %q", logs.String(), tc.wantWarn)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Local() = %v, want an error containing %q", err, tc.wantErr)
			}
			if _, err := os.Stat(trace); !os.IsNotExist(err) {
				t.Fatal("a command ran before the container exec was refused")
			}
		})
	}
}

// TestEnvInheritUsesAppEnv checks that commands under envInherit see
// App.Env, not the test process's environment.
func TestEnvInheritUsesAppEnv(t *testing.T) {
	t.Setenv("ETCHA_TEST_INHERITED", "from-process")
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	p := writeFile(t, dir, "p.jsonnet", fmt.Sprintf(`{run: [{id: 'a', always: true, change: 'echo $ETCHA_TEST_INHERITED > %s'}]}`, out))
	a, _ := newApp(t, baseConfig+`+{exec+: {envInherit: true}}`)
	a.Env = []string{"ETCHA_TEST_INHERITED=from-app", "PATH=/usr/bin:/bin"}
	if err := a.Local(context.Background(), LocalOptions{Target: p}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(readFile(t, out)), "from-app"; got != want {
		t.Fatalf("inherited value = %q, want %q", got, want)
	}
}

// TestGetCmdUsesSourceExec is issue 7 item 19 end to end: getCmd in a
// pattern runs with the effective exec of the source (here exec.user and
// sources.web.exec.env), as the commands do (spec §11.14).
func TestGetCmdUsesSourceExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a program as the user nobody; run the tests as root")
	}
	dir := t.TempDir()
	p := writeFile(t, dir, "p.jsonnet", `{run: [{id: std.native('getCmd')('echo $(id -u)-$FROM_SOURCE', null, false), always: true, change: 'true'}]}`)
	a, out := newApp(t, baseConfig+`+{exec+: {user: 'nobody', workDir: '/'}, sources: {web: {exec: {env: {FROM_SOURCE: 'web'}}}}}`)
	if err := a.Local(context.Background(), LocalOptions{Target: p, Source: "web"}); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "Changed 1: 65534-web\n"; got != want {
		t.Fatalf("local output = %q, want %q", got, want)
	}
}
