package writer

import (
	"errors"
	"fmt"
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
