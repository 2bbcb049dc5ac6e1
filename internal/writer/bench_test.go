package writer

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchKeys returns n keys of ~1 KiB, a tenth of them nested two deep.
func benchKeys(n int) map[string][]byte {
	full := make(map[string][]byte, n)
	value := make([]byte, 1024)
	for i := range n {
		key := fmt.Sprintf("key-%05d", i)
		if i%10 == 0 {
			key = fmt.Sprintf("dir-%02d/sub/key-%05d", i%100, i)
		}
		full[key] = value
	}
	return full
}

// BenchmarkApplyOneKey puts one changed key into a target of 16 keys and
// into one of 10,000, alternately in the same loop, and reports both costs
// and their ratio: a change should cost what changed, not what the prefix
// holds. The atomic layout reuses the retired generation at every put
// (ReuseAfter 1 ns stands for puts spaced past it); "atomic-fresh" never
// reuses one, which is what puts closer together than ReuseAfter cost.
func BenchmarkApplyOneKey(b *testing.B) {
	benchSizes(b, func(i int) (Change, int, int) {
		return Change{Key: "key-00001", Value: []byte(strconv.Itoa(i))}, 1, 0
	})
}

// BenchmarkAddRemoveKey is BenchmarkApplyOneKey for a key that appears and
// disappears in turn, which in the plain layout rewrites the manifest.
func BenchmarkAddRemoveKey(b *testing.B) {
	benchSizes(b, func(i int) (Change, int, int) {
		if i%2 == 0 {
			return Change{Key: "added/key", Value: []byte("new")}, 1, 0
		}
		return Change{Key: "added/key", Delete: true}, 0, 1
	})
}

// benchSizes applies change(i) to a 16-key and a 10,000-key target in each
// round and reports both costs and their ratio, for each layout. change
// returns the change and the Written and Removed counts it must cause.
func benchSizes(b *testing.B, change func(i int) (Change, int, int)) {
	cases := []struct {
		name   string
		layout Layout
		reuse  time.Duration
	}{{"atomic", Atomic, time.Nanosecond}, {"atomic-fresh", Atomic, -1}, {"plain", Plain, 0}}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			sizes := []int{16, 10_000}
			ws := make([]*Writer, len(sizes))
			for i, n := range sizes {
				opts := testOptions(b, c.layout)
				opts.ReuseAfter = c.reuse
				ws[i] = newWriter(b, opts)
				if _, err := ws[i].Sync(benchKeys(n)); err != nil {
					b.Fatal(err)
				}
			}
			spent := make([]time.Duration, len(sizes))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				ch, written, removed := change(i)
				for k := range ws {
					j := (i + k) % len(ws) // take turns going first
					w := ws[j]
					start := time.Now()
					res, err := w.Apply([]Change{ch})
					spent[j] += time.Since(start)
					if err != nil || res.Written != written || res.Removed != removed || !res.Changed {
						b.Fatalf("Apply(%+v) = %+v, %v", ch, res, err)
					}
				}
			}
			for j, n := range sizes {
				b.ReportMetric(float64(spent[j].Nanoseconds())/float64(b.N), fmt.Sprintf("ns/change-%d", n))
			}
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "ratio-10000/16")
		})
	}
}

func BenchmarkSync10k(b *testing.B) {
	full := benchKeys(10_000)
	for _, layout := range layouts {
		b.Run(layout.String(), func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; b.Loop(); i++ {
				opts := Options{Dir: filepath.Join(dir, strconv.Itoa(i)), Layout: layout, UID: -1, GID: -1}
				w := newWriter(b, opts)
				res, err := w.Sync(full)
				if err != nil || res.Written != len(full) {
					b.Fatalf("Sync = %+v, %v", res.Written, err)
				}
			}
		})
	}
}
