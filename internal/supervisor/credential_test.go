package supervisor

import (
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// idOf asks id(1), not os/user, for a number about user name: an
// independent source for what LookupCredential should find.
func idOf(t *testing.T, flag, name string) []uint32 {
	t.Helper()
	out, err := exec.Command("id", flag, name).Output()
	if err != nil {
		t.Fatalf("id %s %s: %v", flag, name, err)
	}
	var ids []uint32
	for _, f := range strings.Fields(string(out)) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			t.Fatalf("id %s %s printed %q", flag, name, out)
		}
		ids = append(ids, uint32(n))
	}
	return ids
}

// TestCredentialChild: a child started with a Credential runs with exactly
// that uid, gid and supplementary groups (the kernel's view, from
// /proc/self/status), still gets the signals this process sends, and its
// exit status is still reported.
func TestCredentialChild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching the child's user needs root")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody on this machine")
	}
	nobodyGroups := idOf(t, "-G", "nobody")
	slices.Sort(nobodyGroups)
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		groups   []uint32
	}{
		{"nobody", idOf(t, "-u", "nobody")[0], idOf(t, "-g", "nobody")[0], nobodyGroups},
		{"nobody:54322", idOf(t, "-u", "nobody")[0], 54322, []uint32{54322}},
		{"54321:54322", 54321, 54322, []uint32{54322}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			cred, err := LookupCredential(tc.spec)
			if err != nil {
				t.Fatalf("LookupCredential(%q) = %v", tc.spec, err)
			}
			out, logs := newLineBuffer(), &syncBuffer{}
			script := `grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo ready; exec sleep 60`
			c, err := Start(Options{Argv: []string{"/bin/sh", "-c", script}, Stdout: out, Stderr: logs, Credential: cred})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-c.Pid(), syscall.SIGKILL); _ = c.Stop(syscall.SIGKILL) })
			status := map[string][]string{}
			for line := out.next(t); line != "ready"; line = out.next(t) {
				k, v, _ := strings.Cut(line, ":")
				status[k] = strings.Fields(v)
			}
			all := func(n uint32) []string { return []string{idString(n), idString(n), idString(n), idString(n)} }
			if got, want := status["Uid"], all(tc.uid); !slices.Equal(got, want) {
				t.Errorf("child Uid (real, effective, saved, fs) = %v, want %v", got, want)
			}
			if got, want := status["Gid"], all(tc.gid); !slices.Equal(got, want) {
				t.Errorf("child Gid = %v, want %v", got, want)
			}
			var want []string
			for _, g := range tc.groups {
				want = append(want, idString(g))
			}
			got := slices.Clone(status["Groups"])
			slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
			if !slices.Equal(got, want) {
				t.Errorf("child Groups = %v, want %v (root's groups must be dropped)", status["Groups"], want)
			}
			checkExit(t, c.Stop(syscall.SIGTERM), 128+int(syscall.SIGTERM), syscall.SIGTERM, "child killed by signal TERM")
		})
	}
}

func idString(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// TestLookupCredentialErrors: each bad spec is one line that names what is
// wrong.
func TestLookupCredentialErrors(t *testing.T) {
	if _, err := user.LookupId("54321"); err == nil {
		t.Skip("uid 54321 exists here; the bare-uid case needs an unused one")
	}
	for _, tc := range []struct{ spec, want string }{
		{"", "not USER or USER:GROUP"},
		{":root", "not USER or USER:GROUP"},
		{"root:", "not USER or USER:GROUP"},
		{"no-such-user-xyz", `no user "no-such-user-xyz"`},
		{"root:no-such-group-xyz", `no group "no-such-group-xyz"`},
		{"54321", "give one as 54321:GID"},
	} {
		_, err := LookupCredential(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("LookupCredential(%q) = %v, want one line containing %q", tc.spec, err, tc.want)
		}
	}
}
