// Package deploy_test runs dispenser the ways the README deploys it, with
// the real tools: postgres supervised with --run-as and reloaded through
// SIGHUP (issue 9 §1), the container image built and run with buildah
// (§2), and the Swarm-secrets flow on a tmpfs with credentials from _FILE
// variables (§3). The tests need root and skip without it or without the
// tools they drive; .ci/run installs them.
package deploy_test

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

const version = "v0.0.0-imagetest"

// TestImage proves the container image without a registry (issue 9 §2):
// it builds the release binaries with scripts/build.sh (the Dockerfile's own
// build step), runs the Dockerfile's final stage with buildah on a stand-in
// for the build stage (golang:* cannot be pulled here), builds a second image
// the way a user does (FROM the image AS d, a busybox base, COPY --from=d
// /bin/etcd-config-dispenser), and runs both against a real etcd on
// loopback with a real child and a real signal.
//
// buildah keeps its images in a temporary storage root, so the machine's
// own storage is untouched.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binaries and three images")
	}
	if os.Geteuid() != 0 {
		t.Skip("buildah with --isolation chroot needs root")
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("buildah not installed (apt-get install buildah busybox-static)")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil || !isStatic(busybox) {
		t.Skip("a static busybox is needed as the user's base image (apt-get install busybox-static)")
	}
	repo := repoRoot(t)
	b := newBuildah(t)

	// 1. The binaries, exactly as the Dockerfile builds them.
	work := t.TempDir()
	ctxDir := filepath.Join(work, "final")
	run(t, repo, "sh", "scripts/build.sh", filepath.Join(ctxDir, "out", "bin"), version)
	for _, name := range []string{"dispenser", "etcha", "etcd-config-dispenser"} {
		assertStatic(t, filepath.Join(ctxDir, "out", "bin", name))
	}

	// 2. The Dockerfile's final stage, with the build stage replaced by the
	// binaries just built.
	final := finalStage(t, filepath.Join(repo, "Dockerfile"))
	copyFile(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(ctxDir, "ca-certificates.crt"))
	writeFile(t, filepath.Join(ctxDir, "Containerfile"), "FROM scratch AS build\n"+
		"COPY out/ /out/\n"+
		"COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"+final)
	b.bud(t, ctxDir, "localhost/dispenser-imagetest")

	// 3. A user's image: their own base (busybox, so the child can be a
	// shell) and the binary copied from ours by the original tool's path.
	baseDir := filepath.Join(work, "base")
	copyFile(t, busybox, filepath.Join(baseDir, "busybox"))
	writeFile(t, filepath.Join(baseDir, "Containerfile"), "FROM scratch\n"+
		"COPY busybox /bin/busybox\n"+
		`RUN ["/bin/busybox", "--install", "-s", "/bin"]`+"\n")
	b.bud(t, baseDir, "localhost/busybox-imagetest")
	userDir := filepath.Join(work, "user")
	writeFile(t, filepath.Join(userDir, "Containerfile"), "FROM localhost/dispenser-imagetest AS d\n"+
		"FROM localhost/busybox-imagetest\n"+
		"COPY --from=d /bin/etcd-config-dispenser /usr/local/sbin/etcd-config-dispenser\n")
	b.bud(t, userDir, "localhost/user-imagetest")

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Put(ctx, "/app/app.conf", "one"); err != nil {
		t.Fatal(err)
	}

	t.Run("scratch image", func(t *testing.T) {
		ctr := b.from(t, "localhost/dispenser-imagetest")
		for _, bin := range []string{"/bin/dispenser", "/bin/etcd-config-dispenser", "/bin/etcha"} {
			args := []string{bin, "--version"}
			if bin == "/bin/etcha" {
				args = []string{bin, "version"}
			}
			if out := b.runIn(t, ctr, nil, nil, args...); strings.TrimSpace(out) != version {
				t.Errorf("%s prints %q, want the stamped %q", strings.Join(args, " "), out, version)
			}
		}
		// No /etc/passwd, no /tmp and no environment but ETCD_ENDPOINTS:
		// one full sync into a bind-mounted target.
		target := t.TempDir()
		b.runIn(t, ctr, []string{"ETCD_ENDPOINTS=" + srv.Endpoint()}, []string{target + ":/config"},
			"/bin/dispenser", "--once", "--prefix=/app", "--target=/config")
		if got := readFile(t, filepath.Join(target, "app.conf")); got != "one" {
			t.Fatalf("app.conf = %q after --once in the scratch image, want %q", got, "one")
		}
	})

	t.Run("user image", func(t *testing.T) {
		ctr := b.from(t, "localhost/user-imagetest")
		target := t.TempDir()
		// The child reports its start and the first reload, then exits 3,
		// which dispenser (and so the container) must exit with.
		script := `trap 'echo "HUP $(cat /config/app.conf)"; exit 3' HUP
echo "ready $(cat /config/app.conf)"
while :; do sleep 1 & wait $!; done`
		cmd := b.command(ctr, []string{"ETCD_ENDPOINTS=" + srv.Endpoint()}, []string{target + ":/config"},
			"/usr/local/sbin/etcd-config-dispenser", "--prefix=/app", "--target=/config", "--signal=SIGHUP",
			"--", "/bin/sh", "-c", script)
		out := startLines(t, cmd)
		if got := out.next(t, "ready "); got != "ready one" {
			t.Fatalf("child started with %q, want %q", got, "ready one")
		}
		if _, err := cli.Put(ctx, "/app/app.conf", "two"); err != nil {
			t.Fatal(err)
		}
		if got := out.next(t, "HUP "); got != "HUP two" {
			t.Fatalf("child reloaded with %q, want %q", got, "HUP two")
		}
		err := out.wait(t)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("container ended with %v, want exit status 3 (the child's)", err)
		}
	})
}

// buildah runs buildah on a storage root of the test's own.
type buildah struct{ root, runroot string }

func newBuildah(t *testing.T) *buildah {
	dir, err := os.MkdirTemp("", "buildah-imagetest-")
	if err != nil {
		t.Fatal(err)
	}
	b := &buildah{root: filepath.Join(dir, "root"), runroot: filepath.Join(dir, "run")}
	t.Cleanup(func() {
		exec.Command("buildah", b.global("rm", "--all")...).Run()
		// vfs layers are plain directories; a leftover mount would keep
		// them busy, so report rather than hide a failed removal.
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove buildah storage: %v", err)
		}
	})
	return b
}

func (b *buildah) global(args ...string) []string {
	return append([]string{"--root", b.root, "--runroot", b.runroot, "--storage-driver", "vfs"}, args...)
}

func (b *buildah) bud(t *testing.T, dir, tag string) {
	t.Helper()
	run(t, dir, "buildah", b.global("bud", "--isolation", "chroot", "--pull-never", "--quiet",
		"-f", filepath.Join(dir, "Containerfile"), "-t", tag, dir)...)
}

func (b *buildah) from(t *testing.T, image string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "", "buildah", b.global("from", "--pull-never", image)...))
}

func (b *buildah) command(ctr string, env, volumes []string, argv ...string) *exec.Cmd {
	args := []string{"run", "--isolation", "chroot", "--network", "host"}
	for _, e := range env {
		args = append(args, "--env", e)
	}
	for _, v := range volumes {
		args = append(args, "--volume", v)
	}
	args = append(append(args, ctr, "--"), argv...)
	return exec.Command("buildah", b.global(args...)...)
}

func (b *buildah) runIn(t *testing.T, ctr string, env, volumes []string, argv ...string) string {
	t.Helper()
	return runCmd(t, b.command(ctr, env, volumes, argv...))
}

// assertStatic fails unless path is a static executable: it runs on an
// empty image.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	if !isStatic(path) {
		t.Errorf("%s is not a static ELF executable (it has a program interpreter or needs shared libraries); build it with CGO_ENABLED=0", path)
	}
}

// isStatic reports whether path is an ELF executable without a program
// interpreter and without shared-library dependencies.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	libs, err := f.ImportedLibraries()
	return err == nil && len(libs) == 0
}

// finalStage returns the Dockerfile's last stage, from its FROM line on,
// after checking it takes the binaries from the stage named "build".
func finalStage(t *testing.T, dockerfile string) string {
	t.Helper()
	text := readFile(t, dockerfile)
	i := strings.LastIndex(text, "\nFROM ")
	if i < 0 {
		t.Fatalf("%s has no second stage", dockerfile)
	}
	stage := text[i+1:]
	if !strings.HasPrefix(stage, "FROM scratch\n") || !strings.Contains(stage, "COPY --from=build ") {
		t.Fatalf("the final stage of %s is not FROM scratch with COPY --from=build:\n%s", dockerfile, stage)
	}
	return stage
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
