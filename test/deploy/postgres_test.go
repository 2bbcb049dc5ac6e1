package deploy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dispenser-dev/dispenser/internal/etcdproc"
	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// TestPostgres is the README's postgres recipe for real (issue 9 §1):
// dispenser, as root, writes postgres's included config and its TLS
// certificate and key from etcd, owned by postgres, and supervises
// `postgres -D …` started with --run-as=postgres (postgres refuses to run
// as root, so the server running at all proves --run-as). One etcd
// transaction changes work_mem and the certificate; after SIGHUP a new
// client sees both while the postmaster keeps its PID and start time
// (reloaded, not restarted). A value postgres rejects leaves the old
// settings in force, postgres's complaint in dispenser's output, and
// dispenser running; a later good value applies. SIGTERM stops both with
// status 0.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dispenser binary and runs a postgres server")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: dispenser writes files owned by postgres and starts postgres with --run-as=postgres")
	}
	pg := newPostgresDir(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	crt1, key1 := selfSigned(t, 1)
	txn(ctx, t, cli, "/pg/conf.d/tuning.conf", "work_mem = '4MB'\n", "/pg/server.crt", crt1, "/pg/server.key", key1)

	bin := etcdproc.BuildPackage(t, "./cmd/dispenser")
	cmd := exec.Command(bin, "--prefix=/pg", "--target="+pg.target, "--owner=postgres", "--mode=0600",
		"--signal=SIGHUP", "--run-as=postgres", "--", filepath.Join(pg.bin, "postgres"), "-D", pg.data)
	cmd.Dir = pg.base
	cmd.Env = []string{"ETCD_ENDPOINTS=" + srv.Endpoint(), "PATH=/usr/bin:/bin"}
	out := startMerged(t, cmd)
	childPID := pidAttr(t, out.containing(t, `msg="child started"`))
	childSeen := time.Now()

	c := &psql{t: t, bin: filepath.Join(pg.bin, "psql"), port: pg.port}
	poll(t, out, time.Minute, 200*time.Millisecond, "postgres accepts connections", func() (bool, string) {
		got, err := c.try("SELECT 1")
		return err == nil && got == "1", fmt.Sprint(got, err)
	})
	started := c.query("SELECT pg_postmaster_start_time()")
	if pid := postmasterPID(t, pg.data); pid != childPID {
		t.Fatalf("postmaster.pid says %d, but dispenser's child is %d", pid, childPID)
	}
	queried := time.Now()
	if got := c.query("SHOW work_mem"); got != "4MB" {
		t.Fatalf("SHOW work_mem = %q at start, want 4MB from conf.d/tuning.conf", got)
	}
	oneQuery := time.Since(queried) // the client's own share of the figures below
	if serial, err := tlsSerial(pg.port); err != nil || serial != 1 {
		t.Fatalf("TLS certificate serial = %d (%v) at start, want 1", serial, err)
	}

	// dispenser holds back reload signals for 2 s after starting the child
	// (startGrace in cmd/dispenser), merging them into one. Wait that out,
	// so the figure below is a reload's, not the start-up hold's; the
	// checks pass either way.
	time.Sleep(time.Until(childSeen.Add(2500 * time.Millisecond)))

	// One transaction: a new work_mem and a new certificate with its key.
	crt2, key2 := selfSigned(t, 2)
	txn(ctx, t, cli, "/pg/conf.d/tuning.conf", "work_mem = '8MB'\n", "/pg/server.crt", crt2, "/pg/server.key", key2)
	committed := time.Now()
	var memAt, certAt time.Duration
	poll(t, out, 30*time.Second, 50*time.Millisecond, "work_mem 8MB and certificate serial 2", func() (bool, string) {
		mem, err := c.try("SHOW work_mem")
		if memAt == 0 && err == nil && mem == "8MB" {
			memAt = time.Since(committed)
		}
		serial, serr := tlsSerial(pg.port)
		if certAt == 0 && serr == nil && serial == 2 {
			certAt = time.Since(committed)
		}
		return memAt > 0 && certAt > 0, fmt.Sprintf("work_mem %q (%v), serial %d (%v)", mem, err, serial, serr)
	})
	t.Logf("from the etcd commit to a new client seeing work_mem=8MB: %v; a new TLS connection seeing serial 2: %v (one psql query alone: %v)",
		memAt.Round(time.Millisecond), certAt.Round(time.Millisecond), oneQuery.Round(time.Millisecond))
	checkSamePostmaster(t, c, pg.data, childPID, started)

	// A value postgres rejects: it complains on its stderr, which is
	// dispenser's, and keeps 8MB; dispenser carries on.
	txn(ctx, t, cli, "/pg/conf.d/tuning.conf", "work_mem = 'banana'\n")
	out.containing(t, `invalid value for parameter "work_mem": "banana"`)
	out.containing(t, "contains errors")
	select {
	case err := <-out.done:
		t.Fatalf("dispenser exited (%v) after postgres rejected a value", err)
	default:
	}
	if got := c.query("SHOW work_mem"); got != "8MB" {
		t.Fatalf("SHOW work_mem = %q after the rejected value, want 8MB still", got)
	}
	txn(ctx, t, cli, "/pg/conf.d/tuning.conf", "work_mem = '16MB'\n")
	poll(t, out, 30*time.Second, 50*time.Millisecond, "work_mem 16MB after the rejected value", func() (bool, string) {
		got, err := c.try("SHOW work_mem")
		return err == nil && got == "16MB", fmt.Sprint(got, err)
	})
	checkSamePostmaster(t, c, pg.data, childPID, started)

	// SIGTERM: postgres's smart shutdown, and dispenser exits with its 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := out.wait(t); err != nil {
		t.Fatalf("dispenser after SIGTERM: %v, want exit status 0 (postgres's)", err)
	}
}

// postgresDir is a postgres data directory made with initdb, configured
// for TestPostgres, and the directories around it.
type postgresDir struct {
	bin    string // directory of postgres, initdb and psql
	base   string // holds the rest; traversable by postgres
	target string // dispenser's --target: server.crt, server.key, conf.d/
	data   string // the data directory, postgres's
	port   int    // postgres's TCP port on 127.0.0.1
}

// newPostgresDir runs initdb as the postgres user and appends to
// postgresql.conf: a free loopback port, a private socket directory, TLS
// from the target's server.crt and server.key, and include_dir of the
// target's conf.d. It skips the test without postgres (fails in CI).
func newPostgresDir(t *testing.T) *postgresDir {
	t.Helper()
	pg := &postgresDir{bin: findPostgres(t), base: t.TempDir(), port: etcdtest.FreePort(t)}
	u, err := user.Lookup("postgres")
	if err != nil {
		missing(t, "no user postgres (the postgresql package creates it)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// t.TempDir's directories are 0700 root.
	for _, d := range []string{pg.base, filepath.Dir(pg.base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pg.target, pg.data = filepath.Join(pg.base, "target"), filepath.Join(pg.base, "data")
	sock := filepath.Join(pg.base, "sock")
	for _, d := range []string{pg.data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(pg.bin, "initdb"), "-D", pg.data, "-U", "postgres", "--auth=trust",
		"--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")
	initdb.Dir = pg.base
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}}
	runCmd(t, initdb)
	conf, err := os.OpenFile(filepath.Join(pg.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(conf, `
# TestPostgres
port = %[1]d
listen_addresses = '127.0.0.1'
unix_socket_directories = '%[2]s'
max_connections = 20
shared_buffers = 16MB
fsync = off
ssl = on
ssl_cert_file = '%[3]s/server.crt'
ssl_key_file = '%[3]s/server.key'
include_dir = '%[3]s/conf.d'
`, pg.port, sock, pg.target)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return pg
}

// findPostgres returns the directory holding postgres, initdb and psql:
// that of postgres on PATH (symlinks resolved), else Debian's newest
// /usr/lib/postgresql/*/bin.
func findPostgres(t *testing.T) string {
	t.Helper()
	var dirs []string
	if p, err := exec.LookPath("postgres"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(debian) - 1; i >= 0; i-- {
		dirs = append(dirs, debian[i])
	}
	for _, d := range dirs {
		ok := true
		for _, name := range []string{"postgres", "initdb", "psql"} {
			if _, err := os.Stat(filepath.Join(d, name)); err != nil {
				ok = false
			}
		}
		if ok {
			return d
		}
	}
	missing(t, "postgres, initdb and psql not found on PATH or in /usr/lib/postgresql/*/bin")
	return ""
}

// missing skips the test for want of postgres, or fails it in CI, which
// installs the postgresql package.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; .ci/run installs the postgresql package", why)
	}
	t.Skipf("%s (apt-get install postgresql)", why)
}

func txn(ctx context.Context, t *testing.T, cli *clientv3.Client, kv ...string) {
	t.Helper()
	var ops []clientv3.Op
	for i := 0; i < len(kv); i += 2 {
		ops = append(ops, clientv3.OpPut(kv[i], kv[i+1]))
	}
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
}

// selfSigned returns a PEM certificate for 127.0.0.1 with the given serial
// and its PEM private key.
func selfSigned(t *testing.T, serial int64) (crt, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// tlsSerial opens a new connection to postgres on 127.0.0.1:port, asks for
// TLS with postgres's SSLRequest packet and returns the serial number of
// the certificate the server presents.
func tlsSerial(port int) (int64, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, err
	}
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103) // length, SSLRequest code
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	answer := make([]byte, 1)
	if _, err := conn.Read(answer); err != nil {
		return 0, err
	}
	if answer[0] != 'S' {
		return 0, fmt.Errorf("server answered %q to SSLRequest, want 'S'", answer)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // self-signed; only the serial matters
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		return 0, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// psql runs single queries as a new client over TCP with TLS.
type psql struct {
	t    *testing.T
	bin  string
	port int
}

// try returns the query's single value, or psql's error.
func (p *psql) try(query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=require connect_timeout=5", p.port)
	b, err := exec.CommandContext(ctx, p.bin, conn, "-XAtc", query).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql -c %q: %w: %s", query, err, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// query is try that fails the test on an error.
func (p *psql) query(query string) string {
	p.t.Helper()
	v, err := p.try(query)
	if err != nil {
		p.t.Fatal(err)
	}
	return v
}

// checkSamePostmaster fails the test unless the postmaster is still pid
// with the start time it had: reloaded, never restarted.
func checkSamePostmaster(t *testing.T, c *psql, data string, pid int, started string) {
	t.Helper()
	if got := postmasterPID(t, data); got != pid {
		t.Fatalf("postmaster PID is %d, was %d: postgres was restarted, not reloaded", got, pid)
	}
	if got := c.query("SELECT pg_postmaster_start_time()"); got != started {
		t.Fatalf("pg_postmaster_start_time() = %s, was %s: postgres was restarted, not reloaded", got, started)
	}
}

// postmasterPID reads the PID on the first line of data/postmaster.pid.
func postmasterPID(t *testing.T, data string) int {
	t.Helper()
	first, _, _ := strings.Cut(readFile(t, filepath.Join(data, "postmaster.pid")), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postmaster.pid starts with %q, not a PID", first)
	}
	return pid
}

// pidAttr returns the pid=N attribute of a dispenser log line.
func pidAttr(t *testing.T, line string) int {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "pid="); ok {
			if pid, err := strconv.Atoi(v); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no pid=N in %q", line)
	return 0
}

// poll calls check every interval until it returns true, for at most
// limit: a server's readiness and a reload's effect have no event to wait
// on but the server's answers. It fails at once if the process behind out
// exits meanwhile.
func poll(t *testing.T, out *lineStream, limit, interval time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for i := 0; i < int(limit/interval)+1 && time.Now().Before(deadline); i++ {
		var ok bool
		if ok, last = check(); ok {
			return
		}
		select {
		case err := <-out.done:
			out.done <- err
			t.Fatalf("dispenser exited (%v) while waiting for %s; last: %s", err, what, last)
		case <-time.After(interval):
		}
	}
	t.Fatalf("no %s within %v; last: %s", what, limit, last)
}

// startMerged starts cmd with its stdout and stderr on one pipe, read line
// by line: dispenser's log and its child's output in the order written.
// Every line is also kept for the failure report.
func startMerged(t *testing.T, cmd *exec.Cmd) *lineStream {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	s := &lineStream{cmd: cmd, lines: make(chan string, 4096), done: make(chan error, 1), stderr: &syncBuffer{}}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			s.stderr.Write([]byte(sc.Text() + "\n"))
			s.lines <- sc.Text()
		}
		close(s.lines)
		r.Close()
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		// Let the reader end: drain what is left until the pipe closes
		// (postgres's backends hold it until they see the postmaster gone).
		deadline := time.After(time.Minute)
	drain:
		for {
			select {
			case _, ok := <-s.lines:
				if !ok {
					break drain
				}
			case <-deadline:
				t.Errorf("dispenser's output still open a minute after it was killed")
				break drain
			}
		}
		if t.Failed() {
			t.Logf("dispenser and postgres output:\n%s", s.stderr)
		}
	})
	return s
}
