package main

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestRunAs: with --run-as=nobody the child runs with nobody's uid, gid and
// groups (as id(1) reports them for the user), reads the files dispenser
// wrote for it as root with --owner=nobody --mode=0400, gets the reload
// signal after a change, and its exit status is dispenser's.
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("--run-as needs root")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody on this machine")
	}
	want := "ids " + idOutput(t, "-u") + " " + idOutput(t, "-g") + " " + idOutput(t, "-G")
	s := etcdtest.Start(t)
	put(t, s, "/x/secret", "one")
	// t.TempDir's directories are 0700 root: let nobody through.
	target := t.TempDir()
	for _, d := range []string{target, filepath.Dir(target)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := `trap 'echo "HUP $(cat ` + target + `/secret)"' HUP
trap 'exit 4' TERM
echo "ids $(id -u) $(id -g) $(id -G)"
echo "ready $(cat ` + target + `/secret)"
while :; do sleep 1 & wait $!; done`
	r := start(t, s, "-p", "/x", "-t", target, "--owner=nobody", "--mode=0400", "--signal=HUP",
		"--run-as=nobody", "--", "/bin/sh", "-c", script)
	if got, _ := r.out.next(t, "ids "); got != want {
		t.Fatalf("child runs with %q, want %q", got, want)
	}
	if got, _ := r.out.next(t, "ready "); got != "ready one" {
		t.Fatalf("child read %q, want %q; log:\n%s", got, "ready one", r.errs.String())
	}
	put(t, s, "/x/secret", "two")
	if got, _ := r.out.next(t, "HUP "); got != "HUP two" {
		t.Fatalf("after the change the child read %q, want %q", got, "HUP two")
	}
	r.stop()
	if got := report(&bytes.Buffer{}, r.wait(t)); got != 4 {
		t.Fatalf("exit status = %d, want the child's 4; log:\n%s", got, r.errs.String())
	}
}

// idOutput is `id FLAG nobody`: what the child should see.
func idOutput(t *testing.T, flag string) string {
	t.Helper()
	out, err := exec.Command("id", flag, "nobody").Output()
	if err != nil {
		t.Fatalf("id %s nobody: %v", flag, err)
	}
	return strings.TrimSpace(string(out))
}
