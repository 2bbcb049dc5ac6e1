package etcha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
)

// BenchmarkVerifyRender measures what `etcha render <jwt>` does with a
// 100-command pattern: size check, signature and claims verification,
// then rendering the bundle with vars and validating the Command list.
// "sysinfo" leaves App.SysInfo nil, as the CLI does: pattern gathers it
// only for a pattern that calls getConfig() (this one does not).
func BenchmarkVerifyRender(b *testing.B) {
	var cmds []string
	for i := range 100 {
		cmds = append(cmds, fmt.Sprintf(`    {id: 'command %[1]d', check: 'test -f /tmp/f%[1]d', change: 'touch /tmp/f%[1]d', remove: 'rm /tmp/f%[1]d', onChange: ['etcha:changed']},`, i))
	}
	dir := b.TempDir()
	p := writeFile(b, dir, "p.jsonnet", "{\n  run: [\n"+strings.Join(cmds, "\n")+"\n  ],\n}\n")
	a, _ := newApp(b, baseConfig)
	ctx := context.Background()
	jwt := filepath.Join(dir, "p.jwt")
	if err := a.Build(ctx, BuildOptions{Pattern: p, Dest: jwt}); err != nil {
		b.Fatal(err)
	}
	text := readFile(b, jwt)
	for _, bc := range []struct {
		name    string
		sysinfo bool
	}{{"fixed-sysinfo", false}, {"sysinfo", true}} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.sysinfo {
				a.SysInfo = nil
			}
			for b.Loop() {
				res, err := a.renderJWT(ctx, text)
				if err != nil {
					b.Fatal(err)
				}
				if got := len(res.Pattern.Run); got != 100 {
					b.Fatalf("rendered %d commands, want 100", got)
				}
			}
		})
	}
}

// BenchmarkEtcdPutToRun measures, for `etcha run` watching an etcd:///
// key on an embedded etcd, the time from the Put of a new one-command
// pattern JWT to its command running (the command writes to a FIFO the
// benchmark reads). It reports the median over b.N puts as
// ms-put-to-run; signing each JWT is not timed.
func BenchmarkEtcdPutToRun(b *testing.B) {
	dir := b.TempDir()
	etcd := etcdtest.Start(b)
	cli := etcd.Client(b)
	fifo := filepath.Join(dir, "ran.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		b.Fatal(err)
	}
	r := startRun(b, receiverConfig(dir, `{app: {pullPaths: ['etcd:///patterns/app']}}`), "ETCD_ENDPOINTS="+etcd.Endpoint())
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var took []time.Duration
	for i := range b.N {
		b.StopTimer()
		p := writeFile(b, dir, fmt.Sprintf("p%d.jsonnet", i), fmt.Sprintf(`{run: [{id: 'run %d', always: true, change: 'echo %d > %s'}]}`, i, i, fifo))
		jwt := signAt(b, p, base.Add(time.Duration(i)*time.Second))
		b.StartTimer()
		start := time.Now()
		if _, err := cli.Put(context.Background(), "/patterns/app", jwt); err != nil {
			b.Fatal(err)
		}
		if _, err := os.ReadFile(fifo); err != nil { // returns once the command wrote
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-put-to-run")
	if err := r.stop(); err != nil {
		b.Fatal(err)
	}
}
