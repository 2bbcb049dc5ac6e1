package writer

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
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

func BenchmarkApplyOneKey(b *testing.B) {
	for _, layout := range layouts {
		b.Run(layout.String(), func(b *testing.B) {
			opts := testOptions(b, layout)
			w := newWriter(b, opts)
			if _, err := w.Sync(benchKeys(10_000)); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				res, err := w.Apply([]Change{{Key: "key-00001", Value: []byte(strconv.Itoa(i))}})
				if err != nil || res.Written != 1 {
					b.Fatalf("Apply = %+v, %v", res, err)
				}
			}
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
