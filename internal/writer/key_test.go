package writer

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidateKeyHostile(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		key, reason string
	}{
		{"", ReasonEmpty},
		{"/", ReasonAbsolute},
		{"/etc/passwd", ReasonAbsolute},
		{"//x", ReasonAbsolute},
		{"..", ReasonReserved + "|" + ReasonEscapes},
		{"../x", ReasonEscapes},
		{"a/../../x", ReasonEscapes},
		{"a/..", ReasonEscapes},
		{".", ReasonDotSegment},
		{"./x", ReasonDotSegment},
		{"a/./b", ReasonDotSegment},
		{"a/.", ReasonDotSegment},
		{"a//b", ReasonEmptySegment},
		{"a/", ReasonEmptySegment},
		{"a\x00b", ReasonNUL},
		{"\x00", ReasonNUL},
		{"..data", ReasonReserved},
		{"..data/x", ReasonReserved},
		{"..dispenser-manifest", ReasonReserved},
		{"a/..tmp-b", ReasonReserved},
		{"...", ReasonReserved},
		{"..2026_11_22_21_47_26.123456789", ReasonReserved},
		{long, ReasonTooLong},
		{"a/" + long, ReasonTooLong},
		{strings.Repeat("abcdefg/", 600), ReasonTooLong},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40q", tt.key), func(t *testing.T) {
			err := ValidateKey(tt.key)
			var rej Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("ValidateKey(%q) = %v, want a Rejection", tt.key, err)
			}
			if !strings.Contains("|"+tt.reason+"|", "|"+rej.Reason+"|") {
				t.Fatalf("ValidateKey(%q).Reason = %q, want %q", tt.key, rej.Reason, tt.reason)
			}
			if got, want := rej.Key, tt.key; got != want {
				t.Fatalf("Rejection.Key = %q, want %q", got, want)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, fmt.Sprintf("key %q rejected: ", tt.key)) || !strings.Contains(msg, "; ") {
				t.Fatalf("message %q lacks the key or the advice", msg)
			}
		})
	}
}

func TestValidateKeyMessage(t *testing.T) {
	if got, want := ValidateKey("../x").Error(), `key "../x" rejected: path escapes target; rename the key`; got != want {
		t.Fatalf("ValidateKey(../x).Error() = %q, want %q", got, want)
	}
}

func TestValidateKeyAccepts(t *testing.T) {
	for _, key := range []string{
		"tls.crt", "nginx/site.conf", ".hidden", "a/.b", "a..b", "a/b..", "-", "x y", "ü/ö",
		`back\slash`, "a:b", strings.Repeat("x", 255), "1/2/3/4/5/6/7/8/9",
	} {
		if err := ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
	}
}

func TestPartitionConflict(t *testing.T) {
	desired := bytesMap(map[string]string{"a": "1", "a/b": "2", "a/c/d": "3", "x": "4", "x/y/z": "5", "../bad": "6"})
	for i := range 20 { // map order varies per iteration
		valid, rejected := partition(desired)
		slices.Sort(valid)
		if got, want := strings.Join(valid, ","), "a/b,a/c/d,x/y/z"; got != want {
			t.Fatalf("round %d: valid = %s, want %s", i, got, want)
		}
		var got []string
		for _, r := range rejected {
			got = append(got, r.Key+":"+r.Reason)
		}
		if got, want := strings.Join(got, ","), "../bad:escapes-target,a:conflict,x:conflict"; got != want {
			t.Fatalf("round %d: rejected = %s, want %s", i, got, want)
		}
		if got, want := rejected[1].Error(), `key "a" rejected: is a directory for key "a/b"; rename or delete one of them`; got != want {
			t.Fatalf("conflict message = %q, want %q", got, want)
		}
	}
}

func TestParseLayout(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Layout
		ok   bool
	}{{"atomic", Atomic, true}, {"plain", Plain, true}, {"", 0, false}, {"Atomic", 0, false}} {
		got, err := ParseLayout(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseLayout(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "a", "a/b", "../x", "a//b", "/a", "..data", ".x", "a/./b", "a\x00", strings.Repeat("a/", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			var rej Rejection
			if !errors.As(err, &rej) || rej.Reason == "" || rej.Key != key {
				t.Fatalf("ValidateKey(%q) = %#v, want a Rejection for the key", key, err)
			}
			return
		}
		if !filepath.IsLocal(key) || path.Clean(key) != key || len(key) > maxKey {
			t.Fatalf("ValidateKey accepted %q, which is not a clean local path", key)
		}
		for seg := range strings.SplitSeq(key, "/") {
			if strings.HasPrefix(seg, "..") || len(seg) > maxSegment || strings.ContainsRune(seg, 0) {
				t.Fatalf("ValidateKey accepted %q with segment %q", key, seg)
			}
		}
	})
}

// partition splits the desired keys into the valid ones and the rejections,
// computed from scratch: the reference that keyIndex, which the writer
// keeps up to date key by key, must agree with.
// The result depends only on the set of keys, never on arrival order: a key
// that is also a directory of another valid key ("a" next to "a/b") is
// rejected as a conflict, so deleting "a/b" later lets "a" appear.
// valid is in no particular order; rejected is sorted by key.
func partition(desired map[string][]byte) (valid []string, rejected []Rejection) {
	dirs := make(map[string]string) // directory → smallest key needing it
	valid = make([]string, 0, len(desired))
	for key := range desired {
		if err := ValidateKey(key); err != nil {
			rejected = append(rejected, err.(Rejection))
			continue
		}
		valid = append(valid, key)
		for i := len(key) - 1; i > 0; i-- {
			if key[i] == '/' {
				if prev, ok := dirs[key[:i]]; ok && prev < key {
					break // parents already hold a key no larger than prev
				}
				dirs[key[:i]] = key
			}
		}
	}
	valid = slices.DeleteFunc(valid, func(key string) bool {
		other, ok := dirs[key]
		if ok {
			rejected = append(rejected, reject(key, ReasonConflict,
				fmt.Sprintf("is a directory for key %q; rename or delete one of them", other)))
		}
		return ok
	})
	slices.SortFunc(rejected, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	return valid, rejected
}

// TestIndexIncremental applies random puts and deletes of nesting and
// conflicting keys to a keyIndex, key by key as Apply does, and checks
// after each batch that it equals the index built from scratch and agrees
// with partition.
func TestIndexIncremental(t *testing.T) {
	keys := []string{"a", "a/b", "a/c", "a/b/c", "a/b/d", "b", "b/a", "c/d/e", "c", "c/d", "..x", "a//b", "d/..e"}
	rng := rand.New(rand.NewPCG(1, 2))
	desired := make(map[string][]byte)
	x := buildIndex(desired)
	for round := range 2000 {
		touched := make(map[string]bool)
		for range 1 + rng.IntN(4) {
			c := Change{Key: keys[rng.IntN(len(keys))], Value: []byte{byte(round)}}
			c.Delete = rng.IntN(3) == 0
			x.set(desired, c, touched)
		}
		for k := range touched {
			x.refresh(k, desired)
		}
		want := buildIndex(desired)
		if !maps.Equal(x.valid, want.valid) || !maps.Equal(x.tops, want.tops) || !maps.Equal(x.under, want.under) {
			t.Fatalf("round %d: valid %v tops %v under %v; want %v %v %v", round, x.valid, x.tops, x.under, want.valid, want.tops, want.under)
		}
		if !maps.EqualFunc(x.rejected, want.rejected, func(a, b Rejection) bool { return a.Error() == b.Error() && a.Reason == b.Reason }) {
			t.Fatalf("round %d: rejected %v, want %v", round, x.rejected, want.rejected)
		}
		valid, rejected := partition(desired)
		if len(valid) != len(x.valid) || len(rejected) != len(x.rejected) {
			t.Fatalf("round %d: index has %d valid, %d rejected; partition %d, %d", round, len(x.valid), len(x.rejected), len(valid), len(rejected))
		}
		for _, r := range rejected {
			if got := x.rejected[r.Key]; got.Error() != r.Error() {
				t.Fatalf("round %d: %q", round, got.Error())
			}
		}
	}
}
