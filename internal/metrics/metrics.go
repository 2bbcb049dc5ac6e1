// Package metrics is what dispenser and etcha tell about themselves over
// HTTP: dispenser's Prometheus metrics on /metrics, liveness on /healthz and
// readiness on /readyz ([Metrics]); etcha's metrics of spec §8 ([Etcha]),
// served by [Handler] behind run.systemMetricsKey.
//
// It holds counters and gauges on private registries (never the global
// one) and serves them; it does not decide what healthy means. The caller
// passes a Health function that returns nil when healthy or an error that
// says why not, and a Ready function. It imports no other package of this
// module.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are dispenser's counters and gauges, updated through its
// methods. Create it with New. All methods are safe for concurrent use.
type Metrics struct {
	reg       *prometheus.Registry
	lastApply atomic.Int64 // unix nanoseconds; 0 before the first write

	appliedRev    prometheus.Gauge
	etcdRev       prometheus.Gauge
	written       prometheus.Counter
	removed       prometheus.Counter
	writeErrors   prometheus.Counter
	rejected      *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	restarts      prometheus.Counter
	signals       prometheus.Counter
	childUp       prometheus.Gauge
	childExit     prometheus.Gauge
	applyDuration prometheus.Histogram

	patternRuns     *prometheus.CounterVec
	patternFailures *prometheus.CounterVec
	patternRefused  *prometheus.CounterVec
	patternIAT      *prometheus.GaugeVec
}

// New creates the metrics on a private registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:         prometheus.NewRegistry(),
		appliedRev:  gauge("applied_revision", "etcd revision of the files on disk."),
		etcdRev:     gauge("etcd_revision", "Latest etcd revision received from the watch."),
		written:     counter("files_written_total", "Files (re)written."),
		removed:     counter("files_removed_total", "Files removed."),
		writeErrors: counter("write_errors_total", "Writes to the target that failed (and will be retried)."),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dispenser", Name: "keys_rejected_total",
			Help: "Keys skipped because their name cannot be a file under the target, by reason.",
		}, []string{"reason"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dispenser", Name: "resyncs_total",
			Help: "Full re-reads of the prefix, by cause (initial, compacted, watch-error, no-leader, progress-timeout, ...).",
		}, []string{"cause"}),
		restarts:  counter("watch_restarts_total", "Watches torn down and set up again after a full resync (every resync but the initial one)."),
		signals:   counter("signals_sent_total", "Reload signals sent to the child."),
		childUp:   gauge("child_up", "1 while the child process runs."),
		childExit: gauge("child_exit_code", "Exit status of the child once it exited (128+n if killed by signal n); -1 before."),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "dispenser", Name: "apply_duration_seconds",
			Help:    "Time to write one change set to the target.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
	}
	m.patternRuns = counterVec("pattern_runs_total", "Runs of a signed pattern from etcd, by pattern (source name).", "pattern")
	m.patternFailures = counterVec("pattern_failures_total", "Runs of a pattern in which a command failed, by pattern.", "pattern")
	m.patternRefused = counterVec("pattern_refused_total", "Pattern JWTs refused (nothing ran), by pattern and reason.", "pattern", "reason")
	m.patternIAT = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "dispenser", Name: "pattern_accepted_iat_seconds",
		Help: "Issued-at time (unix seconds) of the last accepted JWT of a pattern.",
	}, []string{"pattern"})
	m.childExit.Set(-1)
	m.reg.MustRegister(m.patternRuns, m.patternFailures, m.patternRefused, m.patternIAT,
		m.appliedRev, m.etcdRev, m.written, m.removed, m.writeErrors, m.rejected,
		m.resyncs, m.restarts, m.signals, m.childUp, m.childExit, m.applyDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "dispenser", Name: "seconds_since_last_apply",
			Help: "Seconds since the last successful write to the target; -1 before the first.",
		}, m.sinceLastApply))
	return m
}

// Registry is the registry Handler serves on /metrics, for more collectors
// such as NewEtcha's (dispenser --patterns serves etcha's metrics there).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) sinceLastApply() float64 {
	ns := m.lastApply.Load()
	if ns == 0 {
		return -1
	}
	return time.Since(time.Unix(0, ns)).Seconds()
}

// Applied records a successful write that brought the target to rev.
func (m *Metrics) Applied(rev int64, written, removed int, took time.Duration) {
	m.lastApply.Store(time.Now().UnixNano())
	m.appliedRev.Set(float64(rev))
	m.written.Add(float64(written))
	m.removed.Add(float64(removed))
	m.applyDuration.Observe(took.Seconds())
}

// WriteFailed records a failed write.
func (m *Metrics) WriteFailed() { m.writeErrors.Inc() }

// Rejected records a key skipped for reason.
func (m *Metrics) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// Received records a batch from etcd at rev; a non-empty cause marks a
// full resync.
func (m *Metrics) Received(rev int64, cause string) {
	m.etcdRev.Set(float64(rev))
	if cause != "" {
		m.resyncs.WithLabelValues(cause).Inc()
	}
	if cause != "" && cause != "initial" {
		m.restarts.Inc()
	}
}

// Signalled records a reload signal sent to the child.
func (m *Metrics) Signalled() { m.signals.Inc() }

// ChildStarted records that the child runs.
func (m *Metrics) ChildStarted() { m.childUp.Set(1) }

// ChildExited records the child's exit status.
func (m *Metrics) ChildExited(code int) {
	m.childUp.Set(0)
	m.childExit.Set(float64(code))
}

// PatternRan records a run of pattern; failed says a command failed.
func (m *Metrics) PatternRan(pattern string, failed bool) {
	pattern = label(pattern)
	m.patternRuns.WithLabelValues(pattern).Inc()
	if failed {
		m.patternFailures.WithLabelValues(pattern).Inc()
	}
}

// PatternRefused records a refused JWT of pattern.
func (m *Metrics) PatternRefused(pattern, reason string) {
	m.patternRefused.WithLabelValues(label(pattern), reason).Inc()
}

// PatternAccepted records the issued-at time of pattern's current JWT.
func (m *Metrics) PatternAccepted(pattern string, iat time.Time) {
	m.patternIAT.WithLabelValues(label(pattern)).Set(float64(iat.Unix()))
}

// label makes a pattern name a valid label value (UTF-8): Prometheus
// panics on anything else, and names come from etcd keys.
func label(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "dispenser", Name: name, Help: help}, labels)
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "dispenser", Name: name, Help: help})
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "dispenser", Name: name, Help: help})
}

// Options configure Serve.
type Options struct {
	// Addr is the listen address, e.g. "127.0.0.1:9090".
	Addr string
	// Health returns nil when dispenser is healthy, or why it is not.
	Health func() error
	// Ready reports whether the first full sync is done.
	Ready func() bool
}

// Listen binds opts.Addr, so that a bad address is a start-up error; the
// returned function serves until ctx is done, then shuts the server down
// gracefully (at most 5 s).
func (m *Metrics) Listen(opts Options) (serve func(ctx context.Context) error, err error) {
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	srv := &http.Server{Handler: m.Handler(opts), ReadHeaderTimeout: 10 * time.Second}
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(l) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve %s: %w", opts.Addr, err)
		case <-ctx.Done():
		}
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(shutCtx)
		if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
			err = serveErr
		}
		return err
	}, nil
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler(opts Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := opts.Health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !opts.Ready() {
			http.Error(w, "first sync of the target not done yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
