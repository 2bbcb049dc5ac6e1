package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// errUsage is returned for a bad command line, after flag printed why.
var errUsage = errors.New("usage")

// runLimit bounds a whole run; -big and a large -n need more than the
// default figures do.
const runLimit = 30 * time.Minute

// config is what the flags ask for.
type config struct {
	n         int           // samples per latency figure
	syncs     int           // samples of each initial sync, and outages
	spacing   time.Duration // between puts under the 10k-key prefix
	big       bool          // also the 100k-key sync
	json      bool
	fleet     bool   // also the fleet through a gRPC proxy
	fleetSize int    // dispensers in the fleet
	dispenser string // a dispenser binary to measure instead of building one
	etcha     string // an etcha binary to measure instead of building one
	only      map[string]bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 50, "samples per latency figure; the initial syncs and the outages take n/10 (at least 3)")
	quick := fs.Bool("quick", false, "a few samples per figure (5 latencies, 2 syncs, 2 outages), for CI")
	big := fs.Bool("big", false, "also measure the peak RSS of a 100k keys × 1 KiB initial sync (slow)")
	asJSON := fs.Bool("json", false, "print the rows as JSON instead of a table")
	spacing := fs.Duration("spacing", 1500*time.Millisecond,
		"time between puts under the 10k-key prefix: past the writer's reuse grace (DefaultReuseAfter, 1s)")
	fleet := fs.Bool("fleet", false, "also measure a fleet of -fleet-size dispensers through one etcd gRPC proxy (about 5 minutes; included in -big)")
	fleetSize := fs.Int("fleet-size", 200, "dispensers in the -fleet figure, one process each")
	dispenser := fs.String("dispenser", "", "measure this dispenser binary instead of building one from the tree (e.g. an older version)")
	etcha := fs.String("etcha", "", "measure this etcha binary instead of building one from the tree")
	only := fs.String("only", "", "comma-separated figures to run, of: "+strings.Join(stepNames(), ","))
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return config{}, err
	} else if err != nil {
		return config{}, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q; bench takes only flags (see -h)\n", fs.Arg(0))
		return config{}, errUsage
	}
	if *n < 1 {
		fmt.Fprintf(stderr, "bench: -n %d: need at least 1 sample; pass -n 1 or more\n", *n)
		return config{}, errUsage
	}
	if *fleetSize < 1 {
		fmt.Fprintf(stderr, "bench: -fleet-size %d: need at least 1 dispenser\n", *fleetSize)
		return config{}, errUsage
	}
	c := config{n: *n, syncs: max(3, *n/10), spacing: *spacing, big: *big, json: *asJSON,
		fleet: *fleet || *big, fleetSize: *fleetSize, dispenser: *dispenser, etcha: *etcha}
	if *only != "" {
		c.only = map[string]bool{}
		for _, name := range strings.Split(*only, ",") {
			if !slices.Contains(stepNames(), name) {
				fmt.Fprintf(stderr, "bench: -only %s: no figure %q; pick from %s\n", *only, name, strings.Join(stepNames(), ","))
				return config{}, errUsage
			}
			c.only[name] = true
		}
		c.fleet = c.fleet || c.only["fleet"]
		c.big = c.big || c.only["sync100k"]
	}
	if *quick {
		c.n, c.syncs = 5, 2
	}
	return c, nil
}

// run measures every figure and prints the rows to stdout; progress goes
// to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, runLimit)
	defer cancel()
	env, err := setup(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	rows, err := measure(ctx, env, cfg)
	if err != nil {
		return err
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	printTable(stdout, rows)
	return nil
}

// step is one figure: its -only name, what it measures, and the function
// that returns its rows (none when its flag is off).
type step struct {
	name, what string
	f          func(context.Context, *env, config, []row) ([]row, error)
}

var steps = []step{
	{"put16", "put → signal, 16 keys", putSmall},
	{"txn100", "100-key transaction → signal", txn100},
	{"put10k", "put → signal, 10k keys, both layouts", putBig},
	{"sync10k", "initial sync, 10k keys", sync10k},
	{"sync100k", "initial sync, 100k keys", sync100k},
	{"etcha", "etcha render", etchaRender},
	{"outage", "back from an etcd outage with compaction", outage},
	{"fleet", "a fleet through one gRPC proxy", fleet},
}

func stepNames() []string {
	var names []string
	for _, s := range steps {
		names = append(names, s.name)
	}
	return names
}

// measure runs each figure in turn; a figure's reference is measured
// next to it, on the same etcd, in this run.
func measure(ctx context.Context, e *env, cfg config) ([]row, error) {
	var rows []row
	for _, s := range steps {
		if cfg.only != nil && !cfg.only[s.name] {
			continue
		}
		began := time.Now()
		r, err := s.f(ctx, e, cfg, rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
		e.logf("%s: %d rows in %v", s.what, len(r), time.Since(began).Round(time.Millisecond))
		rows = append(rows, r...)
	}
	return rows, nil
}

// row is one line of the table. P50, P95 and P99 are in Unit; Ratio is
// P50 divided by the P50 of the row named Ref (0 when there is no Ref).
type row struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	N     int     `json:"n"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Ratio float64 `json:"ratio,omitempty"`
	Ref   string  `json:"ref,omitempty"`
}

// withRatio sets r's ratio to the given reference row.
func (r row) withRatio(ref row) row {
	if ref.P50 > 0 {
		r.Ratio, r.Ref = r.P50/ref.P50, ref.Name
	}
	return r
}

func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| figure | n | p50 | p95 | p99 | ratio (p50) | to |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		ratio := ""
		if r.Ref != "" {
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s |\n", r.Name, r.N,
			fmtVal(r.P50, r.Unit), fmtVal(r.P95, r.Unit), fmtVal(r.P99, r.Unit), ratio, r.Ref)
	}
}

func fmtVal(v float64, unit string) string {
	if unit == "ms" && v < 10 {
		return fmt.Sprintf("%.2f %s", v, unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// logf reports progress on stderr.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "bench: "+format+"\n", args...)
}

// exists reports whether path names anything.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
