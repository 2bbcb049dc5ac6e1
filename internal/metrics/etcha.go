package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Etcha holds etcha's metrics (spec §8) plus refused JWTs by reason and the
// last accepted iat per source. Create it with NewEtcha. All methods are
// safe for concurrent use.
//
// Label values are made valid UTF-8 (invalid bytes become U+FFFD), and a
// remote address is reduced to its IP: the client's port changes with every
// connection and would add a series per connection.
type Etcha struct {
	commands *prometheus.CounterVec // etcha_commands_total
	runs     *prometheus.CounterVec // etcha_sources_total
	shells   *prometheus.GaugeVec   // etcha_sources_shells
	refused  *prometheus.CounterVec // etcha_sources_refused_total
	iat      *prometheus.GaugeVec   // etcha_sources_accepted_iat_seconds
	last     *lastRuns              // etcha_sources_commands

	mu         sync.Mutex
	shellsOpen map[[3]string]int // active shell sessions per label set
}

// Run is one source run as the metrics see it.
type Run struct {
	Source, Trigger, PublicKey, RemoteAddr string // trigger: "", pull, push, event, webhook
	Changed, Removed                       int    // for etcha_sources_commands{mode=change|remove}
	Failed                                 bool   // etcha_sources_total{error="1"}
	Commands                               []Evaluation
}

// Evaluation is one check, change or remove evaluation of a command, for
// etcha_commands_total.
type Evaluation struct {
	ID, ParentID string
	Mode         string // change, check, remove
	Failed       bool   // for check: the check failed, or a change was needed without a check (§8)
}

// NewRegistry returns a private registry (never the global one) with the Go
// runtime and process collectors, for etcha's metrics endpoint.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// NewEtcha creates etcha's metrics and registers them on reg; it panics if
// reg already holds them. A nil reg registers nothing: the metrics are kept
// but served nowhere. reg gets no Go or process collectors from NewEtcha
// (see NewRegistry), so it may be dispenser's registry, which has them.
func NewEtcha(reg prometheus.Registerer) *Etcha {
	m := &Etcha{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcha_commands_total",
			Help: `Check, change and remove evaluations of commands. For mode "check", error="1" means the check failed or a change was needed without a check.`,
		}, []string{"error", "id", "mode", "parent_id", "public_key", "remote_addr", "source"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcha_sources_total",
			Help: `Runs of a source; error="1" when a command failed.`,
		}, []string{"error", "name", "public_key", "remote_addr", "trigger"}),
		shells: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcha_sources_shells",
			Help: "1 while a shell of the source is active from this key and address, else 0.",
		}, []string{"name", "public_key", "remote_addr"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcha_sources_refused_total",
			Help: "JWTs refused for a source (nothing ran), by reason.",
		}, []string{"name", "reason"}),
		iat: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcha_sources_accepted_iat_seconds",
			Help: "Issued-at time (unix seconds) of the last accepted JWT of a source.",
		}, []string{"name"}),
		last:       newLastRuns(),
		shellsOpen: map[[3]string]int{},
	}
	if reg != nil {
		reg.MustRegister(m.commands, m.runs, m.shells, m.refused, m.iat, m.last)
	}
	return m
}

// Ran records one run of a source: etcha_sources_total +1,
// etcha_commands_total +1 per evaluation, and etcha_sources_commands set to
// this run's counts. etcha_sources_commands holds only the most recent run
// of each source: the series of an earlier run with other public_key,
// remote_addr or trigger values are dropped, so there is one current value
// per source and mode.
func (m *Etcha) Ran(r Run) {
	src, key, addr, trigger := label(r.Source), label(r.PublicKey), ip(r.RemoteAddr), label(r.Trigger)
	m.runs.WithLabelValues(bit(r.Failed), src, key, addr, trigger).Inc()
	for _, e := range r.Commands {
		m.commands.WithLabelValues(bit(e.Failed), label(e.ID), label(e.Mode), label(e.ParentID), key, addr, src).Inc()
	}
	m.last.set(lastRun{name: src, publicKey: key, remoteAddr: addr, trigger: trigger, changed: r.Changed, removed: r.Removed})
}

// Refused records a JWT refused for source, for reason (a short stable
// token such as "signature" or "rollback"; the caller keeps the set small).
func (m *Etcha) Refused(source, reason string) {
	m.refused.WithLabelValues(label(source), label(reason)).Inc()
}

// Accepted records the issued-at time of the JWT source now runs.
func (m *Etcha) Accepted(source string, iat time.Time) {
	m.iat.WithLabelValues(label(source)).Set(float64(iat.Unix()))
}

// Shell records a shell session of source starting (active) or ending.
// The gauge is 1 while at least one session with these labels is active
// and 0 once all have ended (an end without a start is ignored); its series
// stay at 0 afterwards.
func (m *Etcha) Shell(source, publicKey, remoteAddr string, active bool) {
	k := [3]string{label(source), label(publicKey), ip(remoteAddr)}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case active:
		m.shellsOpen[k]++
	case m.shellsOpen[k] > 0:
		m.shellsOpen[k]--
	}
	v := 0.0
	if m.shellsOpen[k] > 0 {
		v = 1
	} else {
		delete(m.shellsOpen, k)
	}
	m.shells.WithLabelValues(k[:]...).Set(v)
}

// Handler serves g's metrics for GET and HEAD in the Prometheus text
// format (or another format a scraper asks for in Accept); other methods
// get 405. When key is "" the metrics are disabled and every request gets
// 404; otherwise a request whose ?key= is missing, repeated or different
// gets 401. The key is compared in constant time (over SHA-256 digests, so
// its length does not show either).
func Handler(g prometheus.Gatherer, key string) http.Handler {
	serve := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	want := sha256.Sum256([]byte(key))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key == "" {
			http.Error(w, "metrics are disabled; set run.systemMetricsKey to enable them", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed; use GET", http.StatusMethodNotAllowed)
			return
		}
		keys := r.URL.Query()["key"]
		if len(keys) != 1 {
			http.Error(w, "missing or repeated key; add ?key=<run.systemMetricsKey> once", http.StatusUnauthorized)
			return
		}
		if got := sha256.Sum256([]byte(keys[0])); subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			http.Error(w, "wrong key; use run.systemMetricsKey", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		serve.ServeHTTP(w, r)
	})
}

// ip reduces a remote address ("host:port", or a bare IP) to its IP,
// without zone and with IPv4-mapped IPv6 as IPv4. Anything else passes
// through label unchanged.
func ip(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().WithZone("").String()
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return label(addr)
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// lastRun is a source's most recent run as etcha_sources_commands shows it.
type lastRun struct {
	name, publicKey, remoteAddr, trigger string
	changed, removed                     int
}

// lastRuns is the etcha_sources_commands collector. It is a collector, not
// a GaugeVec, so that replacing a source's series (delete the old label
// set, set the new one) is one step a concurrent scrape cannot split.
type lastRuns struct {
	desc *prometheus.Desc

	mu   sync.Mutex
	runs map[string]lastRun // by source name
}

func newLastRuns() *lastRuns {
	return &lastRuns{
		desc: prometheus.NewDesc("etcha_sources_commands",
			"Commands changed (mode=change) or removed (mode=remove) in the most recent run of the source; only that run's labels are kept.",
			[]string{"mode", "name", "public_key", "remote_addr", "trigger"}, nil),
		runs: map[string]lastRun{},
	}
}

func (c *lastRuns) set(r lastRun) {
	c.mu.Lock()
	c.runs[r.name] = r
	c.mu.Unlock()
}

func (c *lastRuns) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lastRuns) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.runs {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(r.changed), "change", r.name, r.publicKey, r.remoteAddr, r.trigger)
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(r.removed), "remove", r.name, r.publicKey, r.remoteAddr, r.trigger)
	}
}

var _ prometheus.Collector = (*lastRuns)(nil)
