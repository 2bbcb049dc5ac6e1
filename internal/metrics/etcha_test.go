package metrics

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape GETs url over real HTTP and parses the Prometheus text format
// into samples ("name{k="v",...} value", labels sorted) and types by
// family name. It fails the test on anything but a 200 in the text format.
//
// The parser is here because the project's go.mod may not gain
// prometheus/common (expfmt) as a direct dependency, nor
// kylelemons/godebug, which client_golang's testutil needs.
func scrape(t testing.TB, url string) (samples []string, types map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %q, want 200", url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type = %q, want the text format", ct)
	}
	types = map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		samples = append(samples, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples, types
}

// parseSample parses one sample line and returns it in canonical form.
func parseSample(line string) (string, error) {
	name, rest, _ := strings.Cut(line, " ")
	var labels []string
	if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
		name, rest = line[:i], line[i+1:]
		for !strings.HasPrefix(rest, "}") {
			k, r, ok := strings.Cut(rest, `="`)
			if !ok {
				return "", fmt.Errorf("no label value at %q", rest)
			}
			var v strings.Builder
			for ; ; r = r[1:] {
				if r == "" {
					return "", fmt.Errorf("unterminated label value")
				}
				if r[0] == '"' {
					break
				}
				if r[0] == '\\' && len(r) > 1 {
					r = r[1:]
					if r[0] == 'n' {
						v.WriteByte('\n')
						continue
					}
				}
				v.WriteByte(r[0])
			}
			labels = append(labels, fmt.Sprintf("%s=%q", k, v.String()))
			rest = strings.TrimPrefix(r[1:], ",")
		}
		rest = strings.TrimPrefix(rest[1:], " ")
	}
	value, _, _ := strings.Cut(rest, " ") // drop a timestamp
	f, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return "", err
	}
	sort.Strings(labels)
	return fmt.Sprintf("%s{%s} %g", name, strings.Join(labels, ","), f), nil
}

// family returns the samples of the metric name (with its _sum, _count
// etc. excluded), sorted.
func family(samples []string, name string) []string {
	var out []string
	for _, s := range samples {
		if strings.HasPrefix(s, name+"{") {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func checkFamily(t testing.TB, samples []string, name string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := family(samples, name); !slices.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", name, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// etchaServer serves a fresh Etcha on its own registry over real HTTP on
// loopback, behind key.
func etchaServer(t testing.TB, key string) (*Etcha, *httptest.Server) {
	t.Helper()
	reg := NewRegistry()
	m := NewEtcha(reg)
	srv := httptest.NewServer(Handler(reg, key))
	t.Cleanup(srv.Close)
	return m, srv
}

// TestEtchaScrape: after a sequence of runs, refusals, an accepted JWT and
// a shell, a scrape shows exactly the §8 names, labels and values, the
// refusal and iat metrics, and the Go and process collectors.
func TestEtchaScrape(t *testing.T) {
	m, srv := etchaServer(t, "s3cret")
	m.Ran(Run{Source: "web", Trigger: "pull", PublicKey: "k1", Changed: 1, Commands: []Evaluation{
		{ID: "a", Mode: "check", Failed: true},
		{ID: "a", Mode: "change"},
		{ID: "b", ParentID: "grp", Mode: "check"},
	}})
	m.Ran(Run{Source: "web", Trigger: "push", PublicKey: "k1", RemoteAddr: "192.0.2.7:51234", Failed: true, Removed: 2,
		Commands: []Evaluation{
			{ID: "a", Mode: "check", Failed: true},
			{ID: "a", Mode: "change", Failed: true},
			{ID: "c", Mode: "remove"},
		}})
	m.Ran(Run{Source: "db", Commands: []Evaluation{{ID: "a", Mode: "check", Failed: true}}, Changed: 1})
	m.Refused("web", "signature")
	m.Refused("web", "signature")
	m.Refused("db", "rollback")
	m.Accepted("web", time.Unix(1700000000, 0))
	m.Shell("web", "k1", "[2001:db8::1]:4444", true)

	samples, types := scrape(t, srv.URL+"/?key=s3cret")
	checkFamily(t, samples, "etcha_commands_total",
		`etcha_commands_total{error="1",id="a",mode="check",parent_id="",public_key="k1",remote_addr="",source="web"} 1`,
		`etcha_commands_total{error="0",id="a",mode="change",parent_id="",public_key="k1",remote_addr="",source="web"} 1`,
		`etcha_commands_total{error="0",id="b",mode="check",parent_id="grp",public_key="k1",remote_addr="",source="web"} 1`,
		`etcha_commands_total{error="1",id="a",mode="check",parent_id="",public_key="k1",remote_addr="192.0.2.7",source="web"} 1`,
		`etcha_commands_total{error="1",id="a",mode="change",parent_id="",public_key="k1",remote_addr="192.0.2.7",source="web"} 1`,
		`etcha_commands_total{error="0",id="c",mode="remove",parent_id="",public_key="k1",remote_addr="192.0.2.7",source="web"} 1`,
		`etcha_commands_total{error="1",id="a",mode="check",parent_id="",public_key="",remote_addr="",source="db"} 1`,
	)
	checkFamily(t, samples, "etcha_sources_total",
		`etcha_sources_total{error="0",name="web",public_key="k1",remote_addr="",trigger="pull"} 1`,
		`etcha_sources_total{error="1",name="web",public_key="k1",remote_addr="192.0.2.7",trigger="push"} 1`,
		`etcha_sources_total{error="0",name="db",public_key="",remote_addr="",trigger=""} 1`,
	)
	checkFamily(t, samples, "etcha_sources_commands",
		`etcha_sources_commands{mode="change",name="web",public_key="k1",remote_addr="192.0.2.7",trigger="push"} 0`,
		`etcha_sources_commands{mode="remove",name="web",public_key="k1",remote_addr="192.0.2.7",trigger="push"} 2`,
		`etcha_sources_commands{mode="change",name="db",public_key="",remote_addr="",trigger=""} 1`,
		`etcha_sources_commands{mode="remove",name="db",public_key="",remote_addr="",trigger=""} 0`,
	)
	checkFamily(t, samples, "etcha_sources_shells",
		`etcha_sources_shells{name="web",public_key="k1",remote_addr="2001:db8::1"} 1`)
	checkFamily(t, samples, "etcha_sources_refused_total",
		`etcha_sources_refused_total{name="web",reason="signature"} 2`,
		`etcha_sources_refused_total{name="db",reason="rollback"} 1`)
	checkFamily(t, samples, "etcha_sources_accepted_iat_seconds",
		`etcha_sources_accepted_iat_seconds{name="web"} 1.7e+09`)

	for name, typ := range map[string]string{
		"etcha_commands_total": "counter", "etcha_sources_total": "counter",
		"etcha_sources_commands": "gauge", "etcha_sources_shells": "gauge",
		"etcha_sources_refused_total": "counter", "etcha_sources_accepted_iat_seconds": "gauge",
		"go_goroutines": "gauge", "process_cpu_seconds_total": "counter",
	} {
		if got := types[name]; got != typ {
			t.Errorf("TYPE %s = %q, want %q", name, got, typ)
		}
	}
}

// TestEtchaSourcesCommandsAcrossRuns: etcha_sources_commands keeps one
// value per source and mode, under the labels of the source's most recent
// run; a run with another public key, address or trigger replaces the
// earlier series instead of leaving them stale. Other sources keep theirs.
func TestEtchaSourcesCommandsAcrossRuns(t *testing.T) {
	m, srv := etchaServer(t, "k")
	runs := []struct {
		run  Run
		want []string
	}{
		{Run{Source: "web", Trigger: "pull", PublicKey: "k1", Changed: 3, Removed: 1}, []string{
			`etcha_sources_commands{mode="change",name="web",public_key="k1",remote_addr="",trigger="pull"} 3`,
			`etcha_sources_commands{mode="remove",name="web",public_key="k1",remote_addr="",trigger="pull"} 1`,
		}},
		{Run{Source: "web", Trigger: "push", PublicKey: "k2", RemoteAddr: "198.51.100.1:9", Changed: 1}, []string{
			`etcha_sources_commands{mode="change",name="web",public_key="k2",remote_addr="198.51.100.1",trigger="push"} 1`,
			`etcha_sources_commands{mode="remove",name="web",public_key="k2",remote_addr="198.51.100.1",trigger="push"} 0`,
		}},
		{Run{Source: "web", Trigger: "push", PublicKey: "k2", RemoteAddr: "198.51.100.2:10", Removed: 2}, []string{
			`etcha_sources_commands{mode="change",name="web",public_key="k2",remote_addr="198.51.100.2",trigger="push"} 0`,
			`etcha_sources_commands{mode="remove",name="web",public_key="k2",remote_addr="198.51.100.2",trigger="push"} 2`,
		}},
		{Run{Source: "db", Trigger: "event", Changed: 5}, []string{
			`etcha_sources_commands{mode="change",name="web",public_key="k2",remote_addr="198.51.100.2",trigger="push"} 0`,
			`etcha_sources_commands{mode="remove",name="web",public_key="k2",remote_addr="198.51.100.2",trigger="push"} 2`,
			`etcha_sources_commands{mode="change",name="db",public_key="",remote_addr="",trigger="event"} 5`,
			`etcha_sources_commands{mode="remove",name="db",public_key="",remote_addr="",trigger="event"} 0`,
		}},
		{Run{Source: "web", Trigger: "pull", PublicKey: "k1"}, []string{
			`etcha_sources_commands{mode="change",name="web",public_key="k1",remote_addr="",trigger="pull"} 0`,
			`etcha_sources_commands{mode="remove",name="web",public_key="k1",remote_addr="",trigger="pull"} 0`,
			`etcha_sources_commands{mode="change",name="db",public_key="",remote_addr="",trigger="event"} 5`,
			`etcha_sources_commands{mode="remove",name="db",public_key="",remote_addr="",trigger="event"} 0`,
		}},
	}
	for i, r := range runs {
		m.Ran(r.run)
		samples, _ := scrape(t, srv.URL+"/?key=k")
		t.Run(fmt.Sprint("after run ", i+1), func(t *testing.T) {
			checkFamily(t, samples, "etcha_sources_commands", r.want...)
		})
	}
	// The counter, unlike the gauge, keeps every label set it has seen.
	samples, _ := scrape(t, srv.URL+"/?key=k")
	// Runs 1 and 5 share their labels: 4 series.
	if got := len(family(samples, "etcha_sources_total")); got != 4 {
		t.Errorf("etcha_sources_total has %d series, want 4 (one per distinct run labels)", got)
	}
}

// TestEtchaShells: the shell gauge is 1 while any session with the labels
// is active, 0 once all ended; an unmatched end does not make it negative.
func TestEtchaShells(t *testing.T) {
	m, srv := etchaServer(t, "k")
	const addr1, addr2 = "192.0.2.1:1000", "192.0.2.1:1001" // one client, two connections
	steps := []struct {
		source, addr string
		active       bool
		want         string
	}{
		{"web", addr1, true, "1"},
		{"web", addr2, true, "1"},
		{"web", addr1, false, "1"}, // the second session is still active
		{"web", addr2, false, "0"},
		{"web", addr2, false, "0"}, // an end without a start
		{"web", addr1, true, "1"},
	}
	for i, s := range steps {
		m.Shell(s.source, "k1", s.addr, s.active)
		samples, _ := scrape(t, srv.URL+"/?key=k")
		checkFamily(t, samples, "etcha_sources_shells",
			`etcha_sources_shells{name="web",public_key="k1",remote_addr="192.0.2.1"} `+s.want)
		if t.Failed() {
			t.Fatalf("after step %d", i+1)
		}
	}
}

// TestEtchaHandlerAccess: 404 with no key configured, 401 on a missing,
// wrong or repeated key, 405 on other methods, 200 for GET and HEAD.
func TestEtchaHandlerAccess(t *testing.T) {
	reg := NewRegistry()
	NewEtcha(reg).Refused("web", "signature")
	open := httptest.NewServer(Handler(reg, "s3cret"))
	t.Cleanup(open.Close)
	off := httptest.NewServer(Handler(reg, ""))
	t.Cleanup(off.Close)
	for _, c := range []struct {
		name, method, url string
		code              int
	}{
		{"disabled", "GET", off.URL + "/", 404},
		{"disabled with a key", "GET", off.URL + "/?key=", 404},
		{"disabled POST", "POST", off.URL + "/?key=s3cret", 404},
		{"no key", "GET", open.URL + "/", 401},
		{"empty key", "GET", open.URL + "/?key=", 401},
		{"wrong key", "GET", open.URL + "/?key=s3cre", 401},
		{"longer key", "GET", open.URL + "/?key=s3cret2", 401},
		{"repeated key", "GET", open.URL + "/?key=s3cret&key=s3cret", 401},
		{"key in another parameter", "GET", open.URL + "/?secret=s3cret", 401},
		{"POST", "POST", open.URL + "/?key=s3cret", 405},
		{"PUT", "PUT", open.URL + "/?key=s3cret", 405},
		{"DELETE without key", "DELETE", open.URL + "/", 405},
		{"GET", "GET", open.URL + "/?key=s3cret", 200},
		{"HEAD", "HEAD", open.URL + "/?key=s3cret", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, c.url, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Fatalf("%s %s = %d, want %d", c.method, c.url, resp.StatusCode, c.code)
			}
			hasMetrics := strings.Contains(string(body), "etcha_sources_refused_total")
			if want := c.code == 200 && c.method == "GET"; hasMetrics != want {
				t.Errorf("body shows metrics: %v, want %v:\n%.200s", hasMetrics, want, body)
			}
			if c.code == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want %q", resp.Header.Get("Allow"), "GET, HEAD")
			}
		})
	}
}

// TestEtchaLabels: a remote address is reduced to its IP, and a label
// value that is not UTF-8 is repaired instead of panicking.
func TestEtchaLabels(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:51234":        "192.0.2.7",
		"192.0.2.7":              "192.0.2.7",
		"[2001:db8::1]:443":      "2001:db8::1",
		"[::ffff:192.0.2.7]:80":  "192.0.2.7",
		"[fe80::1%eth0]:22":      "fe80::1",
		"":                       "",
		"@":                      "@", // a unix socket peer
		"not an address:\xff":    "not an address:\uFFFD",
		"[2001:db8::1]:notaport": "[2001:db8::1]:notaport",
		"2001:db8:0:0:0:0:0:1":   "2001:db8::1",
		"198.51.100.1:0":         "198.51.100.1",
		"[::1]:1":                "::1",
		"localhost:8080":         "localhost:8080",
	} {
		if got := ip(in); got != want {
			t.Errorf("ip(%q) = %q, want %q", in, got, want)
		}
	}

	m, srv := etchaServer(t, "k")
	m.Ran(Run{Source: "we\xffb", Commands: []Evaluation{{ID: "\xfe", Mode: "check"}}})
	m.Refused("we\xffb", "bad\xff")
	m.Accepted("we\xffb", time.Unix(5, 0))
	m.Shell("we\xffb", "k\xff", "", true)
	samples, _ := scrape(t, srv.URL+"/?key=k")
	checkFamily(t, samples, "etcha_commands_total",
		`etcha_commands_total{error="0",id="�",mode="check",parent_id="",public_key="",remote_addr="",source="we�b"} 1`)
	checkFamily(t, samples, "etcha_sources_refused_total",
		`etcha_sources_refused_total{name="we�b",reason="bad�"} 1`)
	checkFamily(t, samples, "etcha_sources_shells",
		`etcha_sources_shells{name="we�b",public_key="k�",remote_addr=""} 1`)
}

// TestEtchaOnDispenserRegistry: etcha's metrics register on dispenser's
// registry (which has its own Go and process collectors) and are served on
// its /metrics.
func TestEtchaOnDispenserRegistry(t *testing.T) {
	d := New()
	e := NewEtcha(d.Registry())
	e.Ran(Run{Source: "app", Changed: 1})
	srv := httptest.NewServer(d.Handler(Options{}))
	t.Cleanup(srv.Close)
	samples, _ := scrape(t, srv.URL+"/metrics")
	checkFamily(t, samples, "etcha_sources_total",
		`etcha_sources_total{error="0",name="app",public_key="",remote_addr="",trigger=""} 1`)
	if len(family(samples, "go_goroutines")) != 1 {
		t.Errorf("go_goroutines missing or repeated")
	}
}

// TestEtchaConcurrent: runs, shells and scrapes at once (run with -race)
// lose no count, and every scrape sees exactly one etcha_sources_commands
// pair per source that has run.
func TestEtchaConcurrent(t *testing.T) {
	m, srv := etchaServer(t, "k")
	const workers, runs = 4, 100
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range runs {
				addr := fmt.Sprintf("192.0.2.%d:%d", w, i)
				m.Ran(Run{Source: "web", Trigger: "push", PublicKey: "k1", RemoteAddr: addr, Changed: i})
				m.Shell("web", "k1", addr, true)
				m.Shell("web", "k1", addr, false)
			}
		}()
	}
	for range 20 {
		samples, _ := scrape(t, srv.URL+"/?key=k")
		if got := len(family(samples, "etcha_sources_commands")); got != 0 && got != 2 {
			t.Errorf("etcha_sources_commands has %d series during runs, want 0 or 2", got)
		}
	}
	for range workers {
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("workers did not finish within a minute")
		}
	}
	samples, _ := scrape(t, srv.URL+"/?key=k")
	total := 0.0
	for _, s := range family(samples, "etcha_sources_total") {
		v, err := strconv.ParseFloat(s[strings.LastIndexByte(s, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		total += v
	}
	if total != workers*runs {
		t.Errorf("sum of etcha_sources_total = %v, want %d", total, workers*runs)
	}
	if got := len(family(samples, "etcha_sources_commands")); got != 2 {
		t.Errorf("etcha_sources_commands has %d series, want 2", got)
	}
	if got := len(family(samples, "etcha_sources_shells")); got != workers {
		t.Errorf("etcha_sources_shells has %d series, want %d (one per client IP, ports dropped)", got, workers)
	}
	for _, s := range family(samples, "etcha_sources_shells") {
		if !strings.HasSuffix(s, " 0") {
			t.Errorf("shell still active after all ended: %s", s)
		}
	}
}
