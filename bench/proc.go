package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// childArg as this program's first argument runs it as the measured child.
const childArg = "__dispenser_bench_child"

// child is the program dispenser supervises: it prints "ready <ns>" when
// it starts, then for each SIGHUP reads file and prints "hup <ns> <tag>",
// where ns is the wall clock in Unix nanoseconds once the file was read
// and tag is the file's tag (see tagOf). SIGTERM ends it with status 0.
func child(args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "bench child: got %d arguments, want the file to read\n", len(args))
		return 2
	}
	hup, term := make(chan os.Signal, 64), make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("ready %d\n", time.Now().UnixNano())
	for {
		select {
		case <-hup:
			b, err := os.ReadFile(args[0])
			at := time.Now().UnixNano()
			tag := "unreadable"
			if err == nil {
				tag = tagOf(b)
			}
			if _, err := fmt.Printf("hup %d %s\n", at, tag); err != nil {
				return 1 // bench has gone
			}
		case <-term:
			return 0
		}
	}
}

// value is a value of size bytes that tagOf maps back to tag, which must
// not contain 'x', spaces or newlines.
func value(tag string, size int) string {
	return tag + strings.Repeat("x", max(0, size-len(tag)))
}

func tagOf(b []byte) string {
	if i := bytes.IndexByte(b, 'x'); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// report is one line from the child.
type report struct {
	kind string // "ready" or "hup"
	at   time.Time
	tag  string
}

// proc is a running dispenser binary with the bench child.
type proc struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed when the dispenser process has exited
	out      *os.File      // read end of the child's stdout
	reports  chan report
	quit     chan struct{} // closed by stop: the reader stops sending
	readDone chan struct{}
	errLog   string // dispenser's stderr
}

// startDispenser runs dispenser on prefix → target with layout; the child
// reads file on each SIGHUP. extra flags go before the "--".
func (e *env) startDispenser(prefix, target, layout, file string, extra ...string) (*proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close() // the processes hold their copies
	p := &proc{done: make(chan struct{}), out: r, reports: make(chan report, 64), quit: make(chan struct{}),
		readDone: make(chan struct{}), errLog: filepath.Join(e.dir, fmt.Sprintf("dispenser-%d.log", e.procs))}
	e.procs++
	errLog, err := os.Create(p.errLog)
	if err != nil {
		r.Close()
		return nil, err
	}
	defer errLog.Close()
	args := append([]string{"-p", prefix, "-t", target, "--layout", layout, "-s", "SIGHUP", "--log-level", "warn"}, extra...)
	p.cmd = exec.Command(e.dispenser, append(args, "--", e.self, childArg, file)...)
	p.cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS="+e.endpoint)
	p.cmd.Stdout, p.cmd.Stderr = w, errLog
	if err := p.cmd.Start(); err != nil {
		r.Close()
		return nil, fmt.Errorf("start dispenser: %w", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }() // owned by p: stop waits for done
	go p.read()                                 // owned by p: stop waits for readDone
	return p, nil
}

// read turns the child's lines into reports until the pipe ends or stop.
func (p *proc) read() {
	defer close(p.readDone)
	s := bufio.NewScanner(p.out)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 {
			continue
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		r := report{kind: f[0], at: time.Unix(0, ns)}
		if len(f) > 2 {
			r.tag = f[2]
		}
		select {
		case p.reports <- r:
		case <-p.quit:
			return
		}
	}
}

// await returns the time of the first report of kind (with tag, unless
// tag is "") arriving from now on, skipping others.
func (p *proc) await(ctx context.Context, kind, tag string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		select {
		case r := <-p.reports:
			if r.kind == kind && (tag == "" || r.tag == tag) {
				return r.at, nil
			}
		case <-p.done:
			b, _ := os.ReadFile(p.errLog)
			return time.Time{}, fmt.Errorf("dispenser exited (%v) before the child reported %s %s; its log:\n%s",
				p.cmd.ProcessState, kind, tag, tail(b))
		case <-ctx.Done():
			b, _ := os.ReadFile(p.errLog)
			return time.Time{}, fmt.Errorf("child did not report %s %s within %v: %w; dispenser's log:\n%s",
				kind, tag, waitLimit, context.Cause(ctx), tail(b))
		}
	}
}

// peakRSS is the dispenser's VmHWM, in MiB.
func (p *proc) peakRSS() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS: %w (bench needs Linux /proc)", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kib / 1024, err
		}
	}
	return 0, fmt.Errorf("peak RSS: no VmHWM in /proc/%d/status", p.cmd.Process.Pid)
}

// stop sends SIGTERM (dispenser forwards it to the child), waits for the
// exit, SIGKILL after waitLimit, then ends the reader.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(waitLimit):
		p.cmd.Process.Kill()
		<-p.done
	}
	close(p.quit)
	p.out.Close()
	<-p.readDone
}

// watcher is a bare clientv3 watcher: the floor a dispenser is measured
// against. It timestamps each response as it arrives.
type watcher struct {
	seen   chan seen
	cancel context.CancelFunc
	done   chan struct{}
}

// seen is the last event of one watch response.
type seen struct {
	at       time.Time
	key, tag string
}

// watch starts a watcher on prefix and returns once etcd has created it.
func (e *env) watch(ctx context.Context, prefix string) (*watcher, error) {
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{seen: make(chan seen, 64), cancel: cancel, done: make(chan struct{})}
	ch := e.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp, ok := <-ch:
		if !ok || !resp.Created {
			cancel()
			return nil, fmt.Errorf("watch %s: not created: %v", prefix, resp.Err())
		}
	case <-time.After(waitLimit):
		cancel()
		return nil, fmt.Errorf("watch %s: not created within %v", prefix, waitLimit)
	}
	go func() { // owned by w: stop waits for done
		defer close(w.done)
		for resp := range ch {
			at := time.Now()
			if len(resp.Events) == 0 {
				continue
			}
			ev := resp.Events[len(resp.Events)-1]
			select {
			case w.seen <- seen{at: at, key: string(ev.Kv.Key), tag: tagOf(ev.Kv.Value)}:
			case <-wctx.Done():
				return
			}
		}
	}()
	return w, nil
}

// await returns when the watcher saw key with tag.
func (w *watcher) await(ctx context.Context, key, tag string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		select {
		case s := <-w.seen:
			if s.key == key && s.tag == tag {
				return s.at, nil
			}
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("watcher did not see %s=%s within %v: %w", key, tag, waitLimit, context.Cause(ctx))
		}
	}
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}
