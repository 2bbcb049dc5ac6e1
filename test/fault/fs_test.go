package fault_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
)

// TestFault6TargetFilesystem: the target is on a 64 KiB tmpfs. (1) It is
// filled up and a key too big for the rest arrives; (2) it is remounted
// read-only and a key arrives. Each time the error must be logged and
// counted in /metrics, the previous files must stay intact and readable,
// and the child must not be signalled; once space (or write access) is
// back, the retry timer must bring the target up to date with one signal.
func TestFault6TargetFilesystem(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot mount a tmpfs here (%v); run as root to test a full and a read-only target", err)
		}
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) }) // after dispenser's cleanup
	dir := filepath.Join(mnt, "target")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := etcdproc.StartCluster(t, 1)
	cli := c.Client(t)
	put(t, cli, "/t/a", "1", "/t/b", "2")
	addr := fmt.Sprintf("127.0.0.1:%d", etcdproc.FreePort(t))
	d := startDispenser(t, c.Endpoints(), nil,
		append([]string{"-p", "/t", "-t", dir, "-s", "HUP", "--listen-http", addr}, childArgv(dir, modeServe)...)...)
	if ln, _ := d.out.next(t, "ready"); ln.text != "ready a=1,b=2" {
		t.Fatalf("child started with %q", ln.text)
	}
	warmUp(t, d, cli, "/t/w", "1", "a=1,b=2,w=1")
	want := map[string]string{"a": "1", "b": "2", "w": "1"}

	// (1) Full.
	fill(t, filepath.Join(mnt, "filler"))
	big := strings.Repeat("x", 16<<10)
	put(t, cli, "/t/big", big)
	d.log.containing(t, "write failed")
	checkUntouched(t, d, dir, want, addr)
	remount(t, mnt, 0, "size=1m")
	back := time.Now()
	want["big"] = big
	fileAt := waitState(t, dir, format(want))
	sig := awaitSignal(t, d, format(want))
	t.Logf("fault 6 (target full): space back→file %v, space back→signal %v", fileAt.Sub(back), sig.at.Sub(back))
	checkNoStale(t, dir, want)
	want["marker"] = "1"
	checkMarker(t, d, cli, "/t/marker", "1", format(want))

	// (2) Read-only.
	remount(t, mnt, syscall.MS_RDONLY, "size=1m")
	d.log.skip()
	put(t, cli, "/t/c", "3")
	d.log.containing(t, "write failed")
	checkUntouched(t, d, dir, want, addr)
	remount(t, mnt, 0, "size=1m")
	back = time.Now()
	want["c"] = "3"
	fileAt = waitState(t, dir, format(want))
	sig = awaitSignal(t, d, format(want))
	t.Logf("fault 6 (target read-only): rw back→file %v, rw back→signal %v", fileAt.Sub(back), sig.at.Sub(back))
	checkNoStale(t, dir, want)
	want["marker"] = "2"
	checkMarker(t, d, cli, "/t/marker", "2", format(want))
}

// checkUntouched checks, after a failed write, that the target still shows
// want, that every file reads back, that the child got no signal since the
// last one the test consumed, and that /metrics counts the failure.
func checkUntouched(t *testing.T, d *dispenser, dir string, want map[string]string, addr string) {
	t.Helper()
	if got := state(dir); got != format(want) {
		t.Fatalf("after the failed write the target shows %q, want the previous %q", got, format(want))
	}
	for p, v := range want {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != v {
			t.Fatalf("read %s after the failed write: %q, %v", p, b, err)
		}
	}
	if got := d.out.unread(); len(got) != 0 {
		t.Fatalf("child output after the failed write: %q", got)
	}
	if n := metric(t, addr, "dispenser_write_errors_total"); n < 1 {
		t.Errorf("dispenser_write_errors_total = %v after a failed write, want ≥ 1", n)
	}
}

// fill writes zeros to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for range 1 << 12 { // bounded: 16 MiB at most
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	t.Fatalf("fill %s: still not full after 16 MiB", path)
}

func remount(t *testing.T, mnt string, flags uintptr, data string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT|flags, data); err != nil {
		t.Fatalf("remount %s (flags %#x, %s): %v", mnt, flags, data, err)
	}
}

// metric reads one unlabelled value from dispenser's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	status, body := httpGet(addr + "/metrics")
	if status != 200 {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}
