package pattern

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispenser-dev/dispenser/internal/command"
)

// eval evaluates src as the entrypoint of a one-file bundle and returns
// the compact JSON value.
func eval(t testing.TB, src string, opts Options) (string, error) {
	t.Helper()
	b := &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": src}}
	out, err := b.Evaluate(t.Context(), opts)
	if err != nil {
		return "", err
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("Evaluate returned invalid JSON %q: %v", out, err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data), nil
}

type nativeCase struct {
	name    string
	src     string
	opts    Options
	want    string // compact JSON; ignored when wantErr is set
	wantErr string
}

func runNativeCases(t *testing.T, tests []nativeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eval(t, tt.src, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("error spans lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("eval: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNativeLocal(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"f.txt": "file text\n"})
	t.Setenv("HOME", dir)
	env := map[string]string{"FOO": "bar"}
	runNativeCases(t, []nativeCase{
		{name: "getArch", src: "std.native('getArch')()", want: `"` + runtime.GOARCH + `"`},
		{name: "getOS", src: "std.native('getOS')()", want: `"` + runtime.GOOS + `"`},
		{name: "getConfig", src: "std.native('getConfig')()",
			opts: Options{Config: map[string]any{"exec": map[string]string{"command": "/bin/bash -c"}},
				Vars: map[string]any{"a": 1}, Test: true},
			want: `{"exec":{"command":"/bin/bash -c"},"test":true,"vars":{"a":1,"test":true}}`},
		{name: "getConfig empty", src: "std.native('getConfig')()", want: `{"test":false,"vars":{"test":false}}`},
		{name: "getPath without root", src: "std.native('getPath')()", want: `""`},
		{name: "getEnv set", src: "std.native('getEnv')('FOO', null, false)", opts: Options{Env: env}, want: `"bar"`},
		{name: "getEnv fallback", src: "std.native('getEnv')('NOPE', 'fb', false)", opts: Options{Env: env}, want: `"fb"`},
		{name: "getEnv unset", src: "std.native('getEnv')('NOPE', null, false)", opts: Options{Env: env}, want: `""`},
		{name: "getEnv no process env", src: "std.native('getEnv')('HOME', null, false)", want: `""`},
		{name: "getEnv bad key", src: "std.native('getEnv')(1, null, false)", wantErr: "main.jsonnet:1:1-37: getEnv: key must be a string, got number"},
		{name: "getEnv bad cache", src: "std.native('getEnv')('FOO', null, 'yes')", wantErr: "getEnv: cache must be a boolean, got string"},
		{name: "getCmd", src: "std.native('getCmd')('echo hi; echo warn >&2', null, false)", want: `"hi"`},
		{name: "getCmd env", src: "std.native('getCmd')('echo $FOO', null, false)", opts: Options{Env: env}, want: `"bar"`},
		{name: "getCmd exec", src: "std.native('getCmd')('pwd', null, false)",
			opts: Options{Exec: &command.Exec{Command: "/bin/sh -e -c", WorkDir: dir}}, want: `"` + dir + `"`},
		{name: "getCmd no shell", src: "std.native('getCmd')('/bin/echo a  b', null, false)",
			opts: Options{Exec: &command.Exec{}}, want: `"a b"`},
		{name: "getCmd quoted exec command", src: "std.native('getCmd')('x  y', null, false)",
			opts: Options{Exec: &command.Exec{Command: `/bin/sh -c 'echo "[$0]"'`}}, want: `"[x  y]"`},
		{name: "getCmd quoted script without shell", src: `std.native('getCmd')("/bin/echo 'a  b' c", null, false)`,
			opts: Options{Exec: &command.Exec{}}, want: `"a  b c"`},
		{name: "getCmd bad quoting", src: "std.native('getCmd')('true', null, false)",
			opts: Options{Exec: &command.Exec{Command: "/bin/sh '-c"}}, wantErr: "unterminated single quote"},
		{name: "getCmd container", src: "std.native('getCmd')('true', 'fb', false)",
			opts: Options{Exec: &command.Exec{Command: "/bin/sh -c", ContainerImage: "alpine"}}, wantErr: "container execs are not supported yet"},
		{name: "getCmd hook", src: "std.native('getCmd')('x', null, false)",
			opts: Options{Cmd: func(_ context.Context, s string) (string, error) { return " hook " + s + "\n", nil }}, want: `"hook x"`},
		{name: "getCmd fallback", src: "std.native('getCmd')('exit 3', 'fb', false)", want: `"fb"`},
		{name: "getCmd error", src: "std.native('getCmd')('echo oops >&2; exit 3', null, false)", wantErr: `getCmd "echo oops >&2; exit 3": exit status 3: oops`},
		{name: "getFile", src: "std.native('getFile')('" + filepath.Join(dir, "f.txt") + "', null, false)", want: `"file text\n"`},
		{name: "getFile home", src: "std.native('getFile')('~/f.txt', null, false)", want: `"file text\n"`},
		{name: "getFile fallback", src: "std.native('getFile')('" + filepath.Join(dir, "none") + "', 'fb', false)", want: `"fb"`},
		{name: "getFile missing", src: "std.native('getFile')('" + filepath.Join(dir, "none") + "', null, false)", wantErr: "no such file or directory"},
		{name: "randStr", src: "std.length(std.native('randStr')(40))", want: "40"},
		{name: "randStr chars", src: "std.native('regexMatch')('^[A-Za-z0-9]{100}$', std.native('randStr')(100))", want: "true"},
		{name: "randString alias", src: "std.length(std.native('randString')(3))", want: "3"},
		{name: "randStr bad", src: "std.native('randStr')(-1)", wantErr: "randStr: length must be an integer"},
		{name: "randStr fraction", src: "std.native('randStr')(1.5)", wantErr: "randStr: length must be an integer"},
		{name: "regexMatch true", src: "std.native('regexMatch')('^prod-[0-9]+$', 'prod-12')", want: "true"},
		{name: "regexMatch false", src: "std.native('regexMatch')('^prod', 'dev-1')", want: "false"},
		{name: "regexMatch invalid", src: "std.native('regexMatch')('(', 'x')", wantErr: "regexMatch: error parsing regexp"},
		{name: "render", src: "std.native('render')('{a: 1 + 2}')", want: `{"a":3}`},
		{name: "render natives", src: "std.native('render')(\"std.native('getEnv')('FOO', null, false)\")", opts: Options{Env: env}, want: `"bar"`},
		{name: "render error", src: "std.native('render')('{a: }')", wantErr: "render: render:1:5"},
		{name: "render recursion", src: "std.native('render')(importstr 'main.jsonnet')", wantErr: "render: nested more than 8 deep"},
	})
}

func TestNativeGet(t *testing.T) {
	obj := `{a: {b: [10, 20, {c: 'deep'}]}, 'x y': 1, n: null}`
	runNativeCases(t, []nativeCase{
		{name: "path", src: "std.native('get')(" + obj + ", '.a.b[0]', null, '')", want: "10"},
		{name: "negative index", src: "std.native('get')(" + obj + ", '.a.b[-1].c', null, '')", want: `"deep"`},
		{name: "quoted", src: "std.native('get')(" + obj + `, '."x y"', null, '')`, want: "1"},
		{name: "bracket quoted", src: "std.native('get')(" + obj + `, '.["x y"]', null, '')`, want: "1"},
		{name: "identity", src: "std.native('get')({k: 1}, '.', null, '')", want: `{"k":1}`},
		{name: "missing default", src: "std.native('get')(" + obj + ", '.a.zz', 'def', '')", want: `"def"`},
		{name: "null default", src: "std.native('get')(" + obj + ", '.n', 'def', '')", want: `"def"`},
		{name: "out of range", src: "std.native('get')(" + obj + ", '.a.b[9]', 0, '')", want: "0"},
		{name: "type mismatch", src: "std.native('get')(" + obj + ", '.a[0]', 'x', '')", want: `"x"`},
		{name: "null object", src: "std.native('get')(null, '.secret', 'def', '')", want: `"def"`},
		{name: "cached value wins", src: "std.native('get')({a: 1}, '.a', null, 'p')",
			opts: Options{Cache: map[string]any{"p.a": "from build"}}, want: `"from build"`},
		{name: "bad filter", src: "std.native('get')({}, 'a', null, '')", wantErr: "must start with '.'"},
		{name: "bad bracket", src: "std.native('get')({}, '.a[1', null, '')", wantErr: "missing ]"},
		{name: "bad index", src: "std.native('get')({}, '.a[x]', null, '')", wantErr: "invalid syntax"},
	})
}

func TestGetFileHTTP(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/headers":
			_, _ = w.Write([]byte(r.Header.Get("Authorization") + "|" + r.Header.Get("X-Other")))
		case "/slow":
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("tls ok"))
	}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	runNativeCases(t, []nativeCase{
		{name: "headers", src: "std.native('getFile')('" + srv.URL + "/headers#Authorization:Bearer x\\r\\nX-Other: 1', null, false)", want: `"Bearer x|1"`},
		{name: "not found fallback", src: "std.native('getFile')('" + srv.URL + "/nope', 'fb', false)", want: `"fb"`},
		{name: "not found", src: "std.native('getFile')('" + srv.URL + "/nope', null, false)", wantErr: "HTTP status 404 Not Found"},
		{name: "timeout", src: "std.native('getFile')('" + srv.URL + "/slow#clientTimeout:0.2', null, false)", wantErr: "Client.Timeout exceeded"},
		{name: "bad timeout", src: "std.native('getFile')('" + srv.URL + "/headers#clientTimeout:x', null, false)", wantErr: `clientTimeout "x": use a number of seconds`},
		{name: "tls unverified", src: "std.native('getFile')('" + tlsSrv.URL + "/', null, false)", wantErr: "certificate"},
		{name: "tls skip verify", src: "std.native('getFile')('" + tlsSrv.URL + "/#clientSkipVerify', null, false)", want: `"tls ok"`},
		{name: "tls skipVerify alias", src: "std.native('getFile')('" + tlsSrv.URL + "/#skipVerify:', null, false)", want: `"tls ok"`},
	})

	t.Run("memoised within a render", func(t *testing.T) {
		before := hits.Load()
		call := "std.native('getFile')('" + srv.URL + "/headers', null, false)"
		got, err := eval(t, "["+call+", "+call+", "+call+"]", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := got, `["|","|","|"]`; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
		if got, want := hits.Load()-before, int64(1); got != want {
			t.Fatalf("server hits = %d, want %d", got, want)
		}
	})
}

func TestGetRecord(t *testing.T) {
	// The pure-Go resolver with a Dial that always fails: no query can
	// leave the machine; names are answered from /etc/hosts or fail.
	var dials atomic.Int64
	res := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("no DNS in tests")
	}}
	opts := Options{Resolver: res}
	tests := []nativeCase{
		{name: "bad type", src: "std.native('getRecord')('MX', 'localhost', null, false)", opts: opts, wantErr: `getRecord: type "MX" is not one of a, aaaa, cname, txt`},
		{name: "bad name type", src: "std.native('getRecord')('A', 1, null, false)", opts: opts, wantErr: "getRecord: name must be a string, got number"},
		{name: "invalid name fallback", src: "std.native('getRecord')('A', 'a..b', ['fb'], false)", opts: opts, want: `["fb"]`},
		{name: "lookup fails fallback", src: "std.native('getRecord')('txt', 'etcha.example.test', ['fb'], false)", opts: opts, want: `["fb"]`},
		{name: "lookup fails", src: "std.native('getRecord')('TXT', 'etcha.example.test', null, false)", opts: opts, wantErr: "getRecord TXT etcha.example.test:"},
		{name: "cached", src: "std.native('getRecord')('TXT', 'a..b', null, true)",
			opts: Options{Resolver: res, Cache: map[string]any{`getRecord["TXT","a..b"]`: []string{"cached"}}}, want: `["cached"]`},
	}
	hosts, _ := os.ReadFile("/etc/hosts")
	if regexp.MustCompile(`(?m)^127\.0\.0\.1\s.*\blocalhost\b`).Match(hosts) {
		tests = append(tests, nativeCase{name: "localhost from hosts file", src: "std.native('getRecord')('a', 'localhost', null, false)", opts: opts, want: `["127.0.0.1"]`})
	}
	runNativeCases(t, tests)
	if dials.Load() == 0 {
		t.Fatal("the resolver never dialled: the lookup-failure cases did not reach the resolver")
	}
}

func TestNoExternal(t *testing.T) {
	opts := Options{NoExternal: true, Cache: map[string]any{`getCmd["cached"]`: "from cache"}}
	runNativeCases(t, []nativeCase{
		{name: "getCmd", src: "std.native('getCmd')('echo hi', 'fb', false)", opts: opts, wantErr: "getCmd is disabled (-d disables getCmd, getFile and getRecord)"},
		{name: "getFile", src: "std.native('getFile')('/etc/hostname', null, false)", opts: opts, wantErr: "getFile is disabled"},
		{name: "getRecord", src: "std.native('getRecord')('A', 'localhost', null, false)", opts: opts, wantErr: "getRecord is disabled"},
		{name: "getEnv allowed", src: "std.native('getEnv')('X', 'fb', false)", opts: opts, want: `"fb"`},
		{name: "cached value allowed", src: "std.native('getCmd')('cached', null, true)", opts: opts, want: `"from cache"`},
	})
}

func TestCacheRecordAndReplay(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	data := filepath.Join(dir, "data.txt")
	writeFiles(t, dir, map[string]string{"data.txt": "build data"})
	src := `{
  id: std.native('getCmd')('echo run >> ` + marker + `; echo built', null, true),
  buildOutput: std.native('getFile')('` + data + `', null, true),
  issuer: std.native('getEnv')('WHO', null, true),
  subject: std.native('get')({s: 'build-subject'}, '.s', null, 'sub'),
  run: [{ id: std.native('getCmd')('echo uncached', null, false) }],
}`
	b := &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": src}}

	// Build: cached calls run and are recorded.
	built, err := b.Render(t.Context(), Options{RecordCache: true, Env: map[string]string{"WHO": "builder"}})
	if err != nil {
		t.Fatalf("build render: %v", err)
	}
	wantCache := map[string]any{
		`getCmd["echo run >> ` + marker + `; echo built"]`: "built",
		`getEnv["WHO"]`:           "builder",
		`getFile["` + data + `"]`: "build data",
		"sub.s":                   "build-subject",
	}
	if got, want := mustJSON(t, built.Cache), mustJSON(t, wantCache); got != want {
		t.Fatalf("Cache = %s\nwant    %s", got, want)
	}
	if got, want := readFile(t, marker), "run\n"; got != want {
		t.Fatalf("marker after build = %q, want %q", got, want)
	}

	// Run from the JWT: the cache answers, the command does not run again.
	writeFiles(t, dir, map[string]string{"data.txt": "run data"})
	ran, err := b.Render(t.Context(), Options{Cache: built.Cache, Env: map[string]string{"WHO": "runner"}})
	if err != nil {
		t.Fatalf("run render: %v", err)
	}
	p := ran.Pattern
	if got, want := p.ID+"|"+p.Issuer+"|"+p.Subject+"|"+p.BuildOutput+"|"+p.Run[0].ID, "built|builder|build-subject|build data|uncached"; got != want {
		t.Fatalf("replayed = %q, want %q", got, want)
	}
	if got, want := readFile(t, marker), "run\n"; got != want {
		t.Fatalf("marker after replay = %q, want %q (the cached getCmd ran again)", got, want)
	}
	if ran.Cache != nil {
		t.Fatalf("Cache = %v without RecordCache, want nil", ran.Cache)
	}

	// Without the cache the command runs again.
	if _, err := b.Render(t.Context(), Options{}); err != nil {
		t.Fatalf("uncached render: %v", err)
	}
	if got, want := readFile(t, marker), "run\nrun\n"; got != want {
		t.Fatalf("marker after uncached render = %q, want %q", got, want)
	}
}

func TestGetPath(t *testing.T) {
	b := &Bundle{Entrypoint: "/patterns/p.jsonnet", Root: "/src/repo",
		Files: map[string]string{"/patterns/p.jsonnet": "std.native('getPath')()"}}
	out, err := b.Evaluate(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), `"/src/repo/patterns"`; got != want {
		t.Fatalf("getPath() = %s, want %s", got, want)
	}
}

func TestEvaluateLibrary(t *testing.T) {
	b := &Bundle{Entrypoint: "/lib/x.libsonnet", Files: map[string]string{
		"/lib/x.libsonnet": "{ f(a):: a, g: function(b) b, v: [1, function() 2], n: std.native('getOS')() }",
	}}
	out, err := b.Evaluate(t.Context(), Options{})
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	var got any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got, want := mustJSON(t, got), `{"g":null,"n":"`+runtime.GOOS+`","v":[1,null]}`; got != want {
		t.Fatalf("Evaluate = %s, want %s", got, want)
	}
	var none *Bundle
	if _, err := none.Evaluate(t.Context(), Options{}); err == nil {
		t.Fatal("Evaluate of a nil bundle succeeded")
	}
	bad := &Bundle{Entrypoint: "/lib/x.libsonnet", Files: map[string]string{"/lib/x.libsonnet": "{ a: error 'broken' }"}}
	if _, err := bad.Evaluate(t.Context(), Options{}); err == nil || !strings.Contains(err.Error(), "/lib/x.libsonnet:1:6-20: broken") {
		t.Fatalf("Evaluate error = %v, want location and message", err)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestRenderContextCancelsGetCmd(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := &Bundle{Entrypoint: "/p.jsonnet", Files: map[string]string{
		"/p.jsonnet": "{ id: std.native('getCmd')('sleep 30', null, false) }",
	}}
	start := time.Now()
	_, err := b.Render(ctx, Options{})
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Render error = %v, want context canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("Render took %v after cancel", elapsed)
	}
}

// TestGetCmdRunsAsExec is issue 7 item 19 (spec §11.14): getCmd runs with
// the exec's user and group, like the pattern's commands, and in its own
// process group.
func TestGetCmdRunsAsExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a program as the user nobody; run the tests as root")
	}
	e := &command.Exec{Command: "/bin/sh -c", User: "nobody", WorkDir: "/", Env: map[string]string{"FROM_EXEC": "x"}}
	// Field 5 of /proc/<pid>/stat is the process group.
	script := `read -r _ _ _ _ pgid _ </proc/$$/stat; echo $(id -u):$(id -g):$FROM_EXEC:$pgid-$$`
	got, err := eval(t, "std.native('getCmd')('"+script+"', null, false)", Options{Exec: e})
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal([]byte(got), &out); err != nil {
		t.Fatalf("getCmd value %s: %v", got, err)
	}
	ids, pg, _ := strings.Cut(out, "-")
	if want := "65534:65534:x:"; !strings.HasPrefix(ids, want) {
		t.Fatalf("getCmd ran as %q, want uid:gid:env %q", ids, want)
	}
	if pgid := strings.TrimPrefix(ids, "65534:65534:x:"); pgid != pg {
		t.Fatalf("getCmd ran in process group %q, want its own (%q)", pgid, pg)
	}
}
