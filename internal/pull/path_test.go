package pull_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/pull"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		entry string
		want  pull.Path
	}{
		{"/etc/etcha/app.jwt", pull.Path{Kind: pull.File, File: "/etc/etcha/app.jwt"}},
		{"patterns/a#b.jwt", pull.Path{Kind: pull.File, File: "patterns/a#b.jwt"}},
		{"https://h/x.jwt", pull.Path{Kind: pull.HTTP, URL: "https://h/x.jwt", Timeout: pull.DefaultTimeout}},
		{"HTTP://h:8080/x.jwt?a=1", pull.Path{Kind: pull.HTTP, URL: "HTTP://h:8080/x.jwt?a=1", Timeout: pull.DefaultTimeout}},
		{"https://h/x.jwt#Authorization:Bearer x\r\nX-Other:1", pull.Path{Kind: pull.HTTP, URL: "https://h/x.jwt", Timeout: pull.DefaultTimeout,
			Header: http.Header{"Authorization": {"Bearer x"}, "X-Other": {"1"}}}},
		{"https://h/x.jwt#X-A:1\r\n", pull.Path{Kind: pull.HTTP, URL: "https://h/x.jwt", Timeout: pull.DefaultTimeout, Header: http.Header{"X-A": {"1"}}}},
		{"https://h/x#skipVerify", pull.Path{Kind: pull.HTTP, URL: "https://h/x", Timeout: pull.DefaultTimeout, SkipVerify: true}},
		{"https://h/x#skipVerify:", pull.Path{Kind: pull.HTTP, URL: "https://h/x", Timeout: pull.DefaultTimeout, SkipVerify: true}},
		{"https://h/x#clientSkipVerify:true", pull.Path{Kind: pull.HTTP, URL: "https://h/x", Timeout: pull.DefaultTimeout, SkipVerify: true}},
		{"https://h/x#clientTimeout:3\r\nskipVerify", pull.Path{Kind: pull.HTTP, URL: "https://h/x", Timeout: 3 * time.Second, SkipVerify: true}},
		{"etcd:///patterns/app", pull.Path{Kind: pull.Etcd, Key: "/patterns/app"}},
		{"etcd:///patterns/a#b", pull.Path{Kind: pull.Etcd, Key: "/patterns/a#b"}},
	} {
		got, err := pull.Parse(tc.entry)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.entry, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", tc.entry, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ entry, want string }{
		{"", "empty"},
		{"  ", "empty"},
		{"ftp://h/x.jwt", `unsupported scheme "ftp"`},
		{"etcd://host/key", "three slashes"},
		{"etcd:///", "names no etcd key"},
		{"etcd:////", "names no etcd key"},
		{"https:///x.jwt", "has no host"},
		{"https://h/x#Authorization", `no ":"`},
		{"https://h/x#clientTimeout:0", "positive whole number of seconds"},
		{"https://h/x#clientTimeout:5s", "positive whole number of seconds"},
		{"https://h/x#skipVerify:false", "takes no value"},
		{"https://h/x#Bad Name:1", "not a valid HTTP header name"},
		{"https://h/x#X-A:1\nX-B:2", "control character"},
		{"https://h/x#X-A:1\r\nX-B:2\rX-C:3", "control character"},
	} {
		_, err := pull.Parse(tc.entry)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error containing %q", tc.entry, tc.want)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("Parse(%q) error = %q, want one line containing %q", tc.entry, msg, tc.want)
		}
	}
}

func TestPathStringHidesSecrets(t *testing.T) {
	for _, tc := range []struct{ entry, want string }{
		{"https://user:secret@h/x.jwt#Authorization:Bearer secret", "https://user:xxxxx@h/x.jwt#…"},
		{"https://h/x.jwt", "https://h/x.jwt"},
		{"etcd:///p/app", "etcd:///p/app"},
		{"/a/b.jwt", "/a/b.jwt"},
	} {
		p, err := pull.Parse(tc.entry)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.entry, err)
		}
		if got := p.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.entry, got, tc.want)
		}
	}
}

func TestParseAll(t *testing.T) {
	paths, err := pull.ParseAll([]string{"/a.jwt", "etcd:///p/app", "https://h/x.jwt"})
	if err != nil || len(paths) != 3 || paths[0].Kind != pull.File || paths[1].Kind != pull.Etcd || paths[2].Kind != pull.HTTP {
		t.Fatalf("ParseAll = %#v, %v; want a file, an etcd and an HTTP path in order", paths, err)
	}
	_, err = pull.ParseAll([]string{"/a.jwt", "etcd://h/k"})
	if err == nil || !strings.HasPrefix(err.Error(), "pullPaths[1]: ") {
		t.Fatalf("ParseAll with a bad second entry = %v, want an error starting with pullPaths[1]", err)
	}
}

// TestParseErrorsHideSecrets: a bad entry's error names it without its
// headers or the password in its URL.
func TestParseErrorsHideSecrets(t *testing.T) {
	for _, entry := range []string{
		"ftp://user:secret@host/x.jwt#Authorization:Bearer secret",
		"https://user:secret@/x.jwt",
		"https://user:secret@host/x.jwt#Authorization Bearer secret",
		"https://host/x.jwt#X-Token:secret\r\nbad header secret",
	} {
		_, err := pull.Parse(entry)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", entry)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error shows a secret: %v", entry, err)
		}
	}
}
