package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The fleet figure (-fleet): many dispensers, one process each, on one
// prefix, all through one etcd gRPC proxy (etcd grpc-proxy start), as a
// fleet of containers would run them. It reports a put's time to the last
// of their files, the watches etcd itself serves, and what the idle fleet
// asks of etcd in one minute (from etcd's /metrics), and how many of the
// dispensers read the prefix again in that minute (from their logs).

const (
	fleetPrefix = "/bench/fleet/"
	fleetKeys   = 16
	// fleetProbe is dispenser's default --watch-probe, which the fleet
	// runs with; it settles on a liveness signal within 4 of them.
	fleetProbe = 30 * time.Second
	fleetIdle  = time.Minute
)

// Messages of dispenser's JSON log the fleet figure counts.
const (
	msgResync   = "full resync from etcd"
	msgLiveness = "liveness signal"
)

// fleet runs the fleet figure when -fleet (or -big) asks for it.
func fleet(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	if !cfg.fleet {
		return nil, nil
	}
	if err := e.load(ctx, fleetPrefix, fleetKeys); err != nil {
		return nil, err
	}
	proxy, err := e.startProxy(ctx)
	if err != nil {
		return nil, err
	}
	defer proxy.stop()
	dirs := make([]string, cfg.fleetSize)
	for i := range dirs {
		dirs[i] = filepath.Join(e.dir, "fleet", fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(dirs[i], 0o755); err != nil {
			return nil, err
		}
	}
	defer os.RemoveAll(filepath.Join(e.dir, "fleet"))
	files, err := watchFiles(dirs, strings.TrimPrefix(key(fleetPrefix, 0), fleetPrefix))
	if err != nil {
		return nil, err
	}
	defer files.close()
	began := time.Now()
	f, err := e.startFleet(dirs, proxy.endpoint)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	if _, err := files.awaitAll(ctx, "init"); err != nil {
		return nil, f.explain(err)
	}
	e.logf("fleet: %d dispensers through the gRPC proxy have written their files in %v",
		len(dirs), time.Since(began).Round(time.Millisecond))

	rows, err := e.fleetLatency(ctx, cfg, files)
	if err != nil {
		return nil, f.explain(err)
	}
	settled := f.awaitSettled(ctx, began.Add(9*fleetProbe/2))
	e.logf("fleet: liveness signals logged: %v", settled)
	idle, err := e.fleetIdle(ctx, f)
	if err != nil {
		return nil, err
	}
	return append(rows, idle...), nil
}

// fleetLatency measures n puts: to a bare watcher of etcd (the floor) and
// to the last of the fleet's files.
func (e *env) fleetLatency(ctx context.Context, cfg config, files *fileWatch) ([]row, error) {
	w, err := e.watch(ctx, fleetPrefix)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	k := key(fleetPrefix, 0)
	var floor, first, last []float64
	for i := range cfg.n {
		tag := fmt.Sprintf("f%d", i)
		began := time.Now()
		if _, err := e.cli.Put(ctx, k, value(tag, valueSize)); err != nil {
			return nil, err
		}
		seen, err := w.await(ctx, k, tag)
		if err != nil {
			return nil, err
		}
		at, err := files.awaitAll(ctx, tag)
		if err != nil {
			return nil, err
		}
		floor = append(floor, ms(seen.Sub(began)))
		first = append(first, ms(at[0].Sub(began)))
		last = append(last, ms(at[len(at)-1].Sub(began)))
	}
	n := len(files.dirs)
	ref := dist("floor: put → bare watcher of etcd, fleet prefix", "ms", floor)
	return []row{ref,
		dist(fmt.Sprintf("fleet: put → first of %d files (gRPC proxy)", n), "ms", first).withRatio(ref),
		dist(fmt.Sprintf("fleet: put → last of %d files (gRPC proxy)", n), "ms", last).withRatio(ref),
	}, nil
}

// fleetIdle counts, over one idle minute, etcd's requests (its /metrics
// before and after) and the dispensers' full resyncs (their logs), and
// reads the watches etcd serves.
func (e *env) fleetIdle(ctx context.Context, f *fleetProcs) ([]row, error) {
	before, err := e.etcdMetrics(ctx)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	select {
	case <-time.After(fleetIdle): // the idle minute the figure is about
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, err := e.etcdMetrics(ctx)
	if err != nil {
		return nil, err
	}
	resyncs := f.count(msgResync, began, time.Now())
	one := func(name, unit string, v float64) row {
		return row{Name: name, Unit: unit, N: 1, P50: v, P95: v, P99: v}
	}
	delta := func(name string, match ...string) float64 {
		return after.sum(name, match...) - before.sum(name, match...)
	}
	return []row{
		one("fleet: watchers etcd serves", "watchers", after.sum("etcd_debugging_mvcc_watcher_total")),
		one("fleet: watch streams etcd serves", "streams", after.sum("etcd_debugging_mvcc_watch_stream_total")),
		one("fleet idle 1 min: dispensers' full resyncs", "reads", float64(resyncs)),
		one("fleet idle 1 min: etcd Range requests", "requests", delta("grpc_server_handled_total", `grpc_method="Range"`)),
		one("fleet idle 1 min: etcd unary requests, all", "requests", delta("grpc_server_handled_total", `grpc_type="unary"`)),
		one("fleet idle 1 min: etcd watch stream messages received", "messages", delta("grpc_server_msg_received_total", `grpc_method="Watch"`)),
		one("fleet idle 1 min: etcd bytes sent to clients", "KiB", delta("etcd_network_client_grpc_sent_bytes_total")/1024),
	}, nil
}

// metrics is one scrape of a Prometheus text endpoint.
type metrics []string

// sum adds the values of the samples of name whose labels contain every
// one of match.
func (m metrics) sum(name string, match ...string) float64 {
	var total float64
	for _, l := range m {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, val := "", rest
		if i := strings.LastIndexByte(rest, ' '); i >= 0 {
			labels, val = rest[:i], rest[i+1:]
		}
		all := true
		for _, s := range match {
			all = all && strings.Contains(labels, s)
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil && all {
			total += v
		}
	}
	return total
}

func (e *env) etcdMetrics(ctx context.Context) (metrics, error) {
	return scrape(ctx, e.endpoint+"/metrics")
}

func scrape(ctx context.Context, url string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics %s: %s %v", url, resp.Status, err)
	}
	var m metrics
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			m = append(m, l)
		}
	}
	return m, nil
}

// grpcProxy is an `etcd grpc-proxy start` process in front of e's etcd.
type grpcProxy struct {
	cmd      *exec.Cmd
	done     chan struct{}
	endpoint string
	log      string
}

// startProxy starts etcd's gRPC proxy and waits until a Get through it
// reaches etcd (its /proxy/health).
func (e *env) startProxy(ctx context.Context) (*grpcProxy, error) {
	addr := "127.0.0.1:" + freePort()
	p := &grpcProxy{done: make(chan struct{}), endpoint: "http://" + addr, log: filepath.Join(e.dir, "grpc-proxy.log")}
	log, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the process has its own copy
	p.cmd = exec.Command(e.etcdBin, "grpc-proxy", "start", "--endpoints", strings.TrimPrefix(e.endpoint, "http://"),
		"--listen-addr", addr, "--advertise-client-url", addr, "--data-dir", filepath.Join(e.dir, "grpc-proxy"))
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start grpc-proxy: %w", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }() // owned by p: stop waits for done
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		if m, err := scrape(ctx, p.endpoint+"/proxy/health"); err == nil && strings.Contains(strings.Join(m, ""), `"health":"true"`) {
			return p, nil
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			return nil, fmt.Errorf("grpc-proxy exited at start:\n%s", tail(b))
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("grpc-proxy not healthy within %v", waitLimit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *grpcProxy) stop() {
	p.cmd.Process.Signal(syscall.SIGKILL) // it keeps nothing
	<-p.done
}

// fleetProcs are the fleet's dispenser processes.
type fleetProcs struct {
	cmds []*exec.Cmd
	done []chan struct{}
	logs []string
}

// startFleet starts one dispenser per directory, all on the fleet prefix
// through endpoint, with JSON logs at info level (the liveness signal is
// logged at info).
func (e *env) startFleet(dirs []string, endpoint string) (*fleetProcs, error) {
	f := &fleetProcs{}
	for i, dir := range dirs {
		logPath := filepath.Join(e.dir, fmt.Sprintf("fleet-%03d.log", i))
		log, err := os.Create(logPath)
		if err != nil {
			f.stop()
			return nil, err
		}
		cmd := exec.Command(e.dispenser, "-p", fleetPrefix, "-t", dir, "--log-format", "json", "--log-level", "info")
		cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS="+endpoint)
		cmd.Stdout, cmd.Stderr = log, log
		err = cmd.Start()
		log.Close() // the process has its own copy
		if err != nil {
			f.stop()
			return nil, fmt.Errorf("start dispenser %d: %w", i, err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // owned by f: stop waits for done
		f.cmds, f.done, f.logs = append(f.cmds, cmd), append(f.done, done), append(f.logs, logPath)
	}
	return f, nil
}

// stop sends every dispenser SIGTERM and waits for all, SIGKILL after
// waitLimit.
func (f *fleetProcs) stop() {
	for _, c := range f.cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(waitLimit)
	for i, d := range f.done {
		select {
		case <-d:
		case <-deadline:
			f.cmds[i].Process.Kill()
			<-d
		}
	}
	f.cmds, f.done = nil, nil
}

// explain adds the first dispenser's log that shows an exit to err.
func (f *fleetProcs) explain(err error) error {
	for i, d := range f.done {
		select {
		case <-d:
			b, _ := os.ReadFile(f.logs[i])
			return fmt.Errorf("%w; dispenser %d exited (%v):\n%s", err, i, f.cmds[i].ProcessState, tail(b))
		default:
		}
	}
	return err
}

// awaitSettled waits until every dispenser has logged its liveness signal,
// or until deadline (a dispenser that does not log one is counted as "none"),
// and returns how many logged which.
func (f *fleetProcs) awaitSettled(ctx context.Context, deadline time.Time) map[string]int {
	for {
		by := map[string]int{}
		for _, l := range f.logs {
			by[liveness(l)]++
		}
		if by[""] == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			if n := by[""]; n > 0 {
				delete(by, "")
				by["none"] = n
			}
			return by
		}
		time.Sleep(time.Second) // bounded by deadline: the logs are written by other processes
	}
}

// liveness is the signal a dispenser's log names, or "".
func liveness(logPath string) string {
	var sig string
	scanLog(logPath, func(l logLine) {
		if strings.Contains(l.Msg, msgLiveness) {
			sig = l.Liveness
		}
	})
	return sig
}

// count is how many lines whose message starts with msg the fleet logged
// in [from, to).
func (f *fleetProcs) count(msg string, from, to time.Time) int {
	n := 0
	for _, p := range f.logs {
		scanLog(p, func(l logLine) {
			if strings.HasPrefix(l.Msg, msg) && !l.Time.Before(from) && l.Time.Before(to) {
				n++
			}
		})
	}
	return n
}

type logLine struct {
	Time     time.Time
	Msg      string
	Liveness string
}

func scanLog(path string, f func(logLine)) {
	file, err := os.Open(path)
	if err != nil {
		return
	}
	defer file.Close()
	s := bufio.NewScanner(file)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var l logLine
		if json.Unmarshal(s.Bytes(), &l) == nil {
			f(l)
		}
	}
}
