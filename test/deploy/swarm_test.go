package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestSwarmSecrets is the README's Swarm recipe without Swarm (issue 9 §3):
// the etcd credentials come from files, as Swarm mounts secrets under
// /run/secrets, through ETCD_USERNAME_FILE and ETCD_PASSWORD_FILE; dispenser
// writes the application's secrets to a tmpfs with --mode 0400 --owner
// nobody; a rotated secret reaches the running child with one SIGHUP, with
// no restart of the child.
func TestSwarmSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dispenser binary")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs and --owner need root")
	}
	srv, admin := startAuthEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := admin.Put(ctx, "/secrets/db-password", "first"); err != nil {
		t.Fatal(err)
	}

	// The Swarm secrets dispenser itself reads, as files.
	runSecrets := t.TempDir()
	writeFile(t, filepath.Join(runSecrets, "etcd_username"), "app\n")
	writeFile(t, filepath.Join(runSecrets, "etcd_password"), "app-password\n")

	// The target: a tmpfs, as a `tmpfs` mount in the stack file.
	target := t.TempDir()
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })

	bin := etcdproc.BuildPackage(t, "./cmd/dispenser")
	// The child reports its PID and the secret at start and on each
	// SIGHUP, and exits at SIGTERM.
	script := `trap 'echo "HUP $$ $(cat ` + target + `/db-password)"' HUP
trap 'exit 0' TERM
echo "ready $$ $(cat ` + target + `/db-password)"
while :; do sleep 1 & wait $!; done`
	cmd := exec.Command(bin, "--prefix=/secrets", "--target="+target, "--mode=0400", "--owner=nobody",
		"--signal=SIGHUP", "--", "/bin/sh", "-c", script)
	cmd.Env = []string{
		"ETCD_ENDPOINTS=" + srv.Endpoint(),
		"ETCD_USERNAME_FILE=" + filepath.Join(runSecrets, "etcd_username"),
		"ETCD_PASSWORD_FILE=" + filepath.Join(runSecrets, "etcd_password"),
	}
	out := startLines(t, cmd)

	ready := out.next(t, "ready ")
	pid, secret := fields2(t, ready)
	if secret != "first" {
		t.Fatalf("child started with %q, want the secret %q", ready, "first")
	}
	path := filepath.Join(target, "db-password")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o400 || st.Uid != 65534 {
		t.Errorf("%s: mode %o uid %d, want mode 400 owned by nobody (65534)", path, st.Mode&0o7777, st.Uid)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Errorf("%s is not on the tmpfs (statfs type %#x, %v)", path, fs.Type, err)
	}

	// Rotation: one put, one reload of the same child.
	if _, err := admin.Put(ctx, "/secrets/db-password", "second"); err != nil {
		t.Fatal(err)
	}
	hupPID, secret := fields2(t, out.next(t, "HUP "))
	if secret != "second" || hupPID != pid {
		t.Fatalf("after rotation the child (pid %s) read %q, want pid %s reading %q", hupPID, secret, pid, "second")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := out.wait(t); err != nil {
		t.Fatalf("dispenser after SIGTERM: %v, want exit status 0 (the child's)", err)
	}
}

// fields2 splits "word pid value" into pid and value.
func fields2(t *testing.T, line string) (pid, value string) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 3 {
		t.Fatalf("line %q is not \"word pid value\"", line)
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		t.Fatalf("line %q: pid %q is not a number", line, f[1])
	}
	return f[1], f[2]
}

// startAuthEtcd starts etcd with authentication on and a user "app"
// (password "app-password") that may only read keys under /secrets/, and
// returns it with a client logged in as root.
func startAuthEtcd(t *testing.T) (*etcdtest.Server, *clientv3.Client) {
	t.Helper()
	srv := etcdtest.Start(t, func(cfg *embed.Config) { cfg.BcryptCost = 4 }) // fast password checks
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	steps := []func() error{
		func() error { _, err := c.RoleAdd(ctx, "secrets-reader"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "secrets-reader", "/secrets/", clientv3.GetPrefixRangeEnd("/secrets/"),
				clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := c.UserAdd(ctx, "app", "app-password"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "app", "secrets-reader"); return err },
		func() error { _, err := c.UserAdd(ctx, "root", "root-password"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i+1, err)
		}
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 10 * time.Second,
		Username: "root", Password: "root-password", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return srv, root
}
