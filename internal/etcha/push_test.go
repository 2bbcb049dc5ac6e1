package etcha

import (
	"fmt"
	"strings"
	"testing"
)

// TestPushTargets: target selection and URLs (spec §4.8): hostname (else
// the target name) + build.pushDomainSuffix, port (number or string,
// default 4000), insecure → http, pathPush, only targets whose
// sourcePatterns has the source, -n filter, the CLI payload over the
// configured one, and -h host with or without a port.
func TestPushTargets(t *testing.T) {
	app, _ := newApp(t, `{
  build: {pushDomainSuffix: '.example.com'},
  httpClient: {tlsSkipVerify: false},
  targets: {
    web1: {sourcePatterns: {app: 'app.jsonnet'}},
    web2: {hostname: 'w2', port: '4443', insecure: true, pathPush: '/p/', tlsSkipVerify: true, sourcePatterns: {app: ''}},
    db: {port: 5000, sourcePatterns: {db: 'db.jsonnet'}},
  },
}`)
	show := func(ts []pushTarget) string {
		var out []string
		for _, x := range ts {
			out = append(out, fmt.Sprintf("%s %s %q %v", x.name, x.url, x.payload, x.skipVerify))
		}
		return strings.Join(out, "; ")
	}
	for _, tc := range []struct {
		o    PushOptions
		want string
	}{
		{PushOptions{Source: "app"}, `web1 https://web1.example.com:4000/etcha/v1/push/app "app.jsonnet" false; web2 http://w2.example.com:4443/p/app "" true`},
		{PushOptions{Source: "app", Payload: "ls -l"}, `web1 https://web1.example.com:4000/etcha/v1/push/app "ls -l" false; web2 http://w2.example.com:4443/p/app "ls -l" true`},
		{PushOptions{Source: "app", TargetFilter: "2$"}, `web2 http://w2.example.com:4443/p/app "" true`},
		{PushOptions{Source: "db"}, `db https://db.example.com:5000/etcha/v1/push/db "db.jsonnet" false`},
		{PushOptions{Source: "web/app", Host: "h1", Payload: "x"}, `h1 https://h1:4000/etcha/v1/push/web%2Fapp "x" false`},
		{PushOptions{Source: "app", Host: "127.0.0.1:4001", Payload: "x"}, `127.0.0.1:4001 https://127.0.0.1:4001/etcha/v1/push/app "x" false`},
	} {
		got, err := app.pushTargets(tc.o)
		if err != nil || show(got) != tc.want {
			t.Errorf("pushTargets(%+v) = %s, %v; want %s", tc.o, show(got), err, tc.want)
		}
	}
	for _, o := range []PushOptions{{Source: "nope"}, {Source: "app", TargetFilter: "("}, {Source: "app", Host: "h"}, {Source: "app", TargetFilter: "zzz"}} {
		if _, err := app.pushTargets(o); !IsUsage(err) {
			t.Errorf("pushTargets(%+v): %v, want a usage error", o, err)
		}
	}
	if _, err := LoadConfig(t.Context(), LoadOptions{Overrides: []string{`targets={"x": {"port": "http"}}`}, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "targets.x.port") {
		t.Errorf("a bad port: %v, want an error naming targets.x.port", err)
	}
}
