// Package deploy holds the files for running dispenser outside a container:
// dispenser.service, a systemd unit. Its test checks the unit with
// systemd-analyze verify.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitVerifies runs `systemd-analyze verify` on dispenser.service with
// the paths it names that are machine-specific (the binary, the etcd
// environment file) pointed at files that exist here. Any complaint fails
// the test: systemd only warns about unknown or misspelled settings, which
// would otherwise leave hardening silently off.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("dispenser.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, err := os.Executable() // stands in for /usr/local/bin/dispenser: verify checks it is executable
	if err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(dir, "etcd.env")
	if err := os.WriteFile(env, []byte("ETCD_ENDPOINTS=http://127.0.0.1:2379\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for from, to := range map[string]string{
		"ExecStart=/usr/local/bin/dispenser ":     "ExecStart=" + bin + " ",
		"EnvironmentFile=/etc/dispenser/etcd.env": "EnvironmentFile=" + env,
	} {
		if !strings.Contains(text, from) {
			t.Fatalf("dispenser.service no longer contains %q; update this test with it", from)
		}
		text = strings.Replace(text, from, to, 1)
	}
	path := filepath.Join(dir, "dispenser.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
