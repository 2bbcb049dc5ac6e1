package watch_test

import (
	"errors"
	"io"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"github.com/dispenser-dev/dispenser/internal/watch"
)

func zapNop() *zap.Logger { return zap.NewNop() }

func TestProgressNotifiesKeepWatchAlive(t *testing.T) {
	s := etcdtest.Start(t)
	o := withPrefix(fast, "/app/")
	o.ProgressInterval = 2 * time.Second
	h := startWatcher(t, s, o)
	nextReset(t, h)
	st := waitStatus(t, h.w, "3 progress notifications", func(st watch.Status) bool { return st.ProgressNotifies >= 3 })
	if got, want := st.Resyncs, map[string]int64{watch.CauseInitial: 1}; !maps.Equal(got, want) {
		t.Errorf("Resyncs after %d idle progress intervals = %v, want %v", st.ProgressNotifies, got, want)
	}
	if !st.Connected {
		t.Errorf("Status().Connected = false while the watch is alive")
	}
	if got, want := st.Liveness, watch.LivenessProgress; got != want {
		t.Errorf("Status().Liveness = %q, want %q", got, want)
	}
	waitLog(t, h.logs, "INFO", "liveness signal", watch.LivenessProgress)
}

func TestSilentEtcdTriggersProgressTimeout(t *testing.T) {
	s := etcdtest.Start(t)
	p := startProxy(t, strings.TrimPrefix(s.Endpoint(), "http://"))
	viaProxy, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + p.addr()}, DialTimeout: wait, Logger: zapNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { viaProxy.Close() })
	direct := s.Client(t)
	put(t, direct, "/app/a", "1")

	o := withPrefix(fast, "/app/")
	o.Client = viaProxy
	o.ProgressInterval = 2 * time.Second
	o.RequestTimeout = time.Second
	h := startWatcher(t, s, o)
	nextReset(t, h)
	waitStatus(t, h.w, "a progress notification", func(st watch.Status) bool { return st.ProgressNotifies >= 1 })

	// etcd stays reachable but its answers stop arriving, as with a stuck
	// member or a black-holed connection.
	p.freeze(true)
	rev := put(t, direct, "/app/b", "while silent")
	waitLog(t, h.logs, "lost continuity", "progress-timeout")
	waitLog(t, h.logs, "etcd get /app/ failed", "retrying in")
	p.freeze(false)

	b := nextReset(t, h)
	if got, want := watch.CauseKind(b.Cause), watch.CauseProgressTimeout; got != want {
		t.Errorf("Cause = %q, want kind %q", b.Cause, want)
	}
	if got, want := content(b.Changes), map[string]string{"a": "1", "b": "while silent"}; b.Rev < rev || !maps.Equal(got, want) {
		t.Errorf("Reset = rev %d %v, want rev >= %d %v", b.Rev, got, rev, want)
	}
}

// proxy forwards TCP connections to target and can freeze them: while
// frozen, bytes are read but not delivered, so both ends see silence
// without an error.
type proxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	closed bool
	conns  []net.Conn
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{l: l, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) freeze(on bool) {
	p.mu.Lock()
	p.frozen = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst, holding data back while frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}
