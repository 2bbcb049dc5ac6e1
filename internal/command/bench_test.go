package command

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
)

// BenchmarkRunTrue compares the per-command cost of Run (N commands whose
// check is `true`, so only the check runs) with a bare exec of the same
// `/bin/sh -c true`. Both report ns/cmd.
func BenchmarkRunTrue(b *testing.B) {
	const n = 20
	cs := make(Commands, n)
	for i := range cs {
		cs[i] = &Command{ID: fmt.Sprintf("c%d", i), Check: "true", Change: "false", EnvPrefix: fmt.Sprintf("C%d", i)}
	}
	b.Run("run", func(b *testing.B) {
		ctx := context.Background()
		opts := Options{Exec: shExec(), Env: map[string]string{"ETCHA_SOURCE_NAME": "bench"}}
		for b.Loop() {
			if res := cs.Run(ctx, opts); res.Err != nil || len(res.Outputs) != n {
				b.Fatalf("Run: err %v, %d outputs", res.Err, len(res.Outputs))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/cmd")
	})
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			for range n {
				if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
					b.Fatalf("exec: %v", err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/cmd")
	})
}
