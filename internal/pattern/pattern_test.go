package pattern

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func render(t testing.TB, src string) (*Result, error) {
	t.Helper()
	b := &Bundle{Entrypoint: "/p.jsonnet", Files: map[string]string{"/p.jsonnet": src}}
	return b.Render(t.Context(), Options{})
}

func TestRenderDecode(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string // JSON of the decoded Pattern
	}{
		{"expiresIn", `{expiresIn: '1h'}`, `{"expiresIn":"1h0m0s"}`},
		{"expiresIn empty", `{expiresIn: ''}`, `{}`},
		{"expiresIn number", `{expiresIn: 90}`, `{"expiresIn":"1m30s"}`},
		{"expiresInSec", `{expiresInSec: 60}`, `{"expiresIn":"1m0s"}`},
		{"expiresIn wins", `{expiresIn: '2h', expiresInSec: 60}`, `{"expiresIn":"2h0m0s"}`},
		{"runEnv", `{runEnv: {a: 1}}`, `{"runVars":{"a":1}}`},
		{"runVars wins", `{runVars: {a: 1}, runEnv: {a: 2}}`, `{"runVars":{"a":1}}`},
		{"audience string", `{audience: 'servers'}`, `{"audience":["servers"]}`},
		{"audience list", `{audience: ['a', 'b']}`, `{"audience":["a","b"]}`},
		{"unknown key ignored", `{locks: ['x'], id: 'i'}`, `{"id":"i"}`},
		{"flattened run", `{run: [null, [{id: 'a'}, [{id: 'b'}]]]}`, `{"run":[{"id":"a"},{"id":"b"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := render(t, tt.src)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got := mustJSON(t, res.Pattern); got != tt.want {
				t.Fatalf("Pattern = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRenderInvalid(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"syntax", "{\n  id: 'x'\n  run: [],\n}", "/p.jsonnet:3:3-6: Expected a comma before next field"},
		{"unknown variable", "{\n  id: nope,\n}", "/p.jsonnet:2:7-11: Unknown variable: nope"},
		{"runtime error", "{\n  run: [{id: error 'no id'}],\n}", "/p.jsonnet:2:14-27: no id"},
		{"misspelt key", `{bulid: []}`, `unknown pattern key "bulid"; did you mean "build"?`},
		{"case key", `{RunVars: {}}`, `unknown pattern key "RunVars"; did you mean "runVars"?`},
		{"bad duration", `{expiresIn: 'soon'}`, `duration "soon": use a value such as "1h"`},
		{"bad audience", `{audience: 1}`, "audience must be a string or a list of strings"},
		{"bad run", `{run: 'x'}`, "command list must be an array"},
		{"bad id type", `{id: 1}`, `key "id": got number, want string`},
		{"bad runVars type", `{runVars: []}`, `key "runVars": got array, want object`},
		{"bad exec type", `{buildExec: {command: 1}}`, `key "buildExec.command": got number, want string`},
		{"unknown target", `{run: [{id: 'a', onChange: ['zzz']}]}`, `render /p.jsonnet: run: command "a": onChange target "zzz"`},
		{"self target", `{run: [{id: 'a', onChange: ['a']}]}`, `run: command "a"`},
		{"wrong order", `{run: [{id: 'b'}, {id: 'a', onChange: ['b']}]}`, `run: command "a": onChange target "b"`},
		{"bad envPrefix", `{build: [{id: 'a', envPrefix: '1x'}]}`, `build: command "a": envPrefix "1x" is invalid`},
		{"two errors one line", `{run: [{id: ''}, {id: 'a', envPrefix: '-'}]}`, `; command "a": envPrefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Render error spans lines: %q", err)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"10m"`), &d); err != nil {
		t.Fatal(err)
	}
	if got, want := time.Duration(d), 10*time.Minute; got != want {
		t.Fatalf("Duration = %v, want %v", got, want)
	}
	if err := json.Unmarshal([]byte(`true`), &d); err == nil {
		t.Fatal("Unmarshal(true) succeeded, want an error")
	}
	var p Pattern
	if err := json.Unmarshal([]byte(mustJSON(t, Pattern{ExpiresIn: Duration(time.Hour), ID: "x"})), &p); err != nil {
		t.Fatal(err)
	}
	if got, want := time.Duration(p.ExpiresIn), time.Hour; got != want {
		t.Fatalf("round trip ExpiresIn = %v, want %v", got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	abs, err := filepath.Abs("testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join(abs, "..", "golden.json")
	t.Chdir(abs)
	b, err := Load("main.jsonnet")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Chdir(t.TempDir())
	opts := Options{
		Vars: map[string]any{"app": "myapp", "site": map[string]any{"name": "prod-1", "region": "eu"}},
		Config: map[string]any{
			"exec": map[string]any{"command": "/bin/bash -c"},
		},
		Env: map[string]string{"GREETING": "hello"},
	}
	res, err := b.Render(t.Context(), opts)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	// The golden file holds both outputs: the rendered JSON that `etcha
	// render` prints and the decoded Pattern.
	var got bytes.Buffer
	got.Write(res.JSON)
	decoded, err := json.MarshalIndent(res.Pattern, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got.Write(decoded)
	got.WriteByte('\n')
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("render output differs from %s (run with -update after checking):\n%s", golden, got.String())
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    string
		wantErr string
	}{
		{"formatted", "{\n  a: 'x',\n  b: [1, 2],\n}\n", "{\n  a: 'x',\n  b: [1, 2],\n}\n", ""},
		{"unformatted", "{a:\"x\",\n b:[1,2]}", "{\n  a: 'x',\n  b: [1, 2],\n}\n", ""},
		{"syntax error", "{\n a: }", "", "x.jsonnet:2:5-6: Unexpected: \"}\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Format("x.jsonnet", []byte(tt.src))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Format error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Format: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("Format = %q, want %q", got, tt.want)
			}
			if changed := string(got) != tt.src; changed != (tt.name == "unformatted") {
				t.Fatalf("Format changed input = %v for %s", changed, tt.name)
			}
		})
	}
}

func TestMergeVars(t *testing.T) {
	tests := []struct {
		name   string
		layers []map[string]any
		want   string
	}{
		{"none", nil, `{}`},
		{"nil layers", []map[string]any{nil, {"a": 1}, nil}, `{"a":1}`},
		{"docs example", []map[string]any{
			{"var1": true, "var2": "original"},
			{"var1": false, "var2": "value"},
		}, `{"var1":false,"var2":"value"}`},
		{"recursive", []map[string]any{
			{"db": map[string]any{"host": "a", "port": 1}},
			{"db": map[string]any{"port": 2, "user": "u"}},
		}, `{"db":{"host":"a","port":2,"user":"u"}}`},
		{"null keeps lower", []map[string]any{
			{"a": 1, "o": map[string]any{"k": "v"}},
			{"a": nil, "o": map[string]any{"k": nil}},
		}, `{"a":1,"o":{"k":"v"}}`},
		{"null alone is kept", []map[string]any{{"a": nil}}, `{"a":null}`},
		{"scalar replaces object", []map[string]any{
			{"a": map[string]any{"k": 1}},
			{"a": "flat"},
		}, `{"a":"flat"}`},
		{"object replaces scalar", []map[string]any{
			{"a": "flat"},
			{"a": map[string]any{"k": 1}},
		}, `{"a":{"k":1}}`},
		{"arrays replace", []map[string]any{
			{"l": []any{1, 2, 3}},
			{"l": []any{4}},
		}, `{"l":[4]}`},
		{"precedence order", []map[string]any{
			{"x": "runVars"}, {"x": "vars"}, {"x": "source"}, {"x": "target"},
		}, `{"x":"target"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustJSON(t, MergeVars(tt.layers...)); got != tt.want {
				t.Fatalf("MergeVars = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestMergeVarsDoesNotAlias(t *testing.T) {
	low := map[string]any{"o": map[string]any{"k": 1}, "l": []any{1}}
	out := MergeVars(low, map[string]any{"o": map[string]any{"j": 2}})
	out["o"].(map[string]any)["k"] = 99
	out["l"].([]any)[0] = 99
	if got, want := mustJSON(t, low), `{"l":[1],"o":{"k":1}}`; got != want {
		t.Fatalf("input changed to %s, want %s", got, want)
	}
}

func TestSysInfo(t *testing.T) {
	info := SysInfo()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	short, _, _ := strings.Cut(host, ".")
	if got, want := info["hostname"], short; got != want {
		t.Fatalf("hostname = %v, want %v", got, want)
	}
	for _, k := range []string{"osType", "runtimeArch", "kernelRelease", "machine"} {
		if s, _ := info[k].(string); s == "" {
			t.Errorf("%s = %v, want a non-empty string", k, info[k])
		}
	}
	if n, _ := info["cpuLogical"].(float64); n < 1 {
		t.Errorf("cpuLogical = %v, want >= 1", info["cpuLogical"])
	}
	if n, _ := info["memoryTotal"].(float64); n < 1 {
		t.Errorf("memoryTotal = %v, want >= 1", info["memoryTotal"])
	}
	// It must be usable as a var: plain JSON all the way down.
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&Bundle{Entrypoint: "/p.jsonnet", Files: map[string]string{
		"/p.jsonnet": "{ id: std.native('getConfig')().vars.sysinfo.osType }",
	}}).Render(t.Context(), Options{Vars: map[string]any{"sysinfo": json.RawMessage(data)}})
	if err != nil {
		t.Fatalf("Render with sysinfo: %v", err)
	}
	if got, want := res.Pattern.ID, info["osType"]; got != want {
		t.Fatalf("vars.sysinfo.osType = %v, want %v", got, want)
	}
}

func TestSysInfoParsers(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"hosts":   "# comment\n127.0.0.1 localhost\n10.0.0.5 web1.example.com web1 # primary\n",
		"route":   "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n" + "eth1\t000010AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n" + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n",
		"meminfo": "MemTotal:        2048000 kB\nMemFree: 1 kB\n",
	})
	tests := []struct{ name, got, want string }{
		{"fqdn from hosts", func() string { _, f := hostNames("web1", filepath.Join(dir, "hosts")); return f }(), "web1.example.com"},
		{"dotted hostname", func() string { s, f := hostNames("a.b.c", filepath.Join(dir, "hosts")); return s + " " + f }(), "a a.b.c"},
		{"no hosts entry", func() string { _, f := hostNames("db", filepath.Join(dir, "hosts")); return f }(), "db"},
		{"default interface", defaultInterface(filepath.Join(dir, "route")), "eth0"},
		{"memory", mustJSON(t, memTotalMB(filepath.Join(dir, "meminfo"))), "2000"},
		{"os-release", mustJSON(t, parseOSRelease("ID=debian\nVERSION_ID=\"12\"\nNAME='Debian'\n# x=y\n")),
			`{"ID":"debian","NAME":"Debian","VERSION_ID":"12"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}
