package pattern

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-jsonnet"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// uniqueBundle returns a one-file bundle whose text no other test uses, so
// its entry in the process-wide cache is this test's own.
func uniqueBundle(t testing.TB, src string) *Bundle {
	t.Helper()
	tag := fmt.Sprintf("// %s %d\n", t.Name(), time.Now().UnixNano())
	return &Bundle{Entrypoint: "/main.jsonnet", Files: map[string]string{"/main.jsonnet": tag + src}}
}

// idleVM reports whether the cache holds an idle VM for b, which the next
// render of b will reuse instead of parsing b again.
func idleVM(b *Bundle) *jsonnet.VM {
	key, _ := bundleKey(b)
	bundles.mu.Lock()
	defer bundles.mu.Unlock()
	e, ok := bundles.entries.peek(key)
	if !ok || e.idle == nil {
		return nil
	}
	return e.idle.vm
}

// TestRenderReusesParsedBundle: the second render of the same bundle uses
// the VM (and so the syntax trees) of the first, and returns the same
// result.
func TestRenderReusesParsedBundle(t *testing.T) {
	b := uniqueBundle(t, commandsPattern(10, "reuse"))
	first, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	vm := idleVM(b)
	if vm == nil {
		t.Fatal("no idle VM cached after the first render")
	}
	second, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(second.JSON), string(first.JSON); got != want {
		t.Fatalf("second render = %s, want %s", got, want)
	}
	if got, want := mustJSON(t, second.Pattern), mustJSON(t, first.Pattern); got != want {
		t.Fatalf("second pattern = %s, want %s", got, want)
	}
	if idleVM(b) != vm {
		t.Fatal("the second render did not reuse the cached VM")
	}
	// A copy of the bundle with the same text is the same entry.
	same := &Bundle{Entrypoint: b.Entrypoint, Files: map[string]string{"/main.jsonnet": b.Files["/main.jsonnet"]}}
	if idleVM(same) != vm {
		t.Fatal("an equal bundle does not find the cached VM")
	}
}

// TestRenderChangedInputMisses: a bundle differing in one byte, or in a
// file name, renders its own text; vars are not part of the cache and a
// change shows at once.
func TestRenderChangedInputMisses(t *testing.T) {
	src := `{run: [{id: 'one', change: std.toString(std.native('getConfig')().vars.n)}]}`
	b := uniqueBundle(t, src)
	for _, n := range []float64{1, 2} {
		res, err := b.Render(t.Context(), Options{Vars: map[string]any{"n": n}})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Pattern.Run[0].Change, fmt.Sprint(n); got != want {
			t.Fatalf("vars.n = %v: change = %q, want %q", n, got, want)
		}
	}
	other := &Bundle{Entrypoint: b.Entrypoint, Files: map[string]string{
		"/main.jsonnet": strings.Replace(b.Files["/main.jsonnet"], "'one'", "'two'", 1)}}
	res, err := other.Render(t.Context(), Options{Vars: map[string]any{"n": 3}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Pattern.Run[0].ID, "two"; got != want {
		t.Fatalf("changed bundle: id = %q, want %q", got, want)
	}
	// The same text under another path is another bundle: the error names
	// the new path.
	moved := &Bundle{Entrypoint: "/other.jsonnet", Files: map[string]string{"/other.jsonnet": b.Files["/main.jsonnet"] + "+ {run: x}"}}
	if _, err := moved.Render(t.Context(), Options{}); err == nil || !strings.Contains(err.Error(), "/other.jsonnet") {
		t.Fatalf("moved bundle error = %v, want one naming /other.jsonnet", err)
	}
}

// TestRenderMachineNativesRunAgain renders the same signed JWT twice, as a
// source does on each tick, with the files that getFile reads (from the
// entrypoint, and from an imported file whose value go-jsonnet would
// otherwise keep) and that getCmd prints changed in between: the second
// render shows the new contents. randStr differs too.
func TestRenderMachineNativesRunAgain(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeFiles(t, dir, map[string]string{"data": "first"})
	priv, pub, err := token.GenerateKeys("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	jwt, err := token.Sign(&token.Claims{IssuedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Hour),
		Pattern: token.Pattern{Entrypoint: "/main.jsonnet", Files: map[string]string{
			"/main.jsonnet": fmt.Sprintf(`local lib = import 'lib.libsonnet';
{run: [
  {id: 'file', change: std.native('getFile')(%[1]q, null, false)},
  {id: 'imported', change: lib.data},
  {id: 'cmd', change: std.native('getCmd')('cat %[1]s', null, false)},
  {id: 'rand', change: std.native('randStr')(32)},
]}`, data),
			"/lib.libsonnet": fmt.Sprintf(`{data: std.native('getFile')(%q, null, false)}`, data),
		}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	render := func() map[string]string {
		t.Helper()
		claims, _, err := token.Verify(jwt, token.VerifyOptions{Keys: token.PublicKeys{pub}})
		if err != nil {
			t.Fatal(err)
		}
		b := &Bundle{Entrypoint: claims.Pattern.Entrypoint, Files: claims.Pattern.Files}
		res, err := b.Render(t.Context(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range res.Pattern.Run {
			got[c.ID] = c.Change
		}
		return got
	}
	first := render()
	writeFiles(t, dir, map[string]string{"data": "second"})
	second := render()
	for _, id := range []string{"file", "imported", "cmd"} {
		if first[id] != "first" || second[id] != "second" {
			t.Errorf("%s: first render %q, second %q; want first, then second", id, first[id], second[id])
		}
	}
	if first["rand"] == second["rand"] {
		t.Errorf("randStr returned %q in both renders", first["rand"])
	}
}

// TestRenderConcurrentSameBundle renders one bundle from several
// goroutines at once (run with -race): each render gets its own VM or the
// idle one, never a VM in use, and its own natives' results.
func TestRenderConcurrentSameBundle(t *testing.T) {
	b := uniqueBundle(t, `{run: [{id: std.native('getEnv')('ID', null, false)}]}`)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			for j := range 5 {
				want := fmt.Sprintf("g%d-%d", i, j)
				res, err := b.Render(t.Context(), Options{Env: map[string]string{"ID": want}})
				if err != nil {
					errs[i] = err
					return
				}
				if got := res.Pattern.Run[0].ID; got != want {
					errs[i] = fmt.Errorf("render saw id %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestVMCacheBounds: the cache keeps at most max entries and maxBytes of
// source text, evicting the least recently used, and never caches a bundle
// over maxOne.
func TestVMCacheBounds(t *testing.T) {
	c := newVMCache(2, 90, 50)
	bundle := func(text string) *Bundle {
		return &Bundle{Entrypoint: "/m", Files: map[string]string{"/m": text}}
	}
	lease := func(b *Bundle) *lease {
		t.Helper()
		l, err := c.lease(b)
		if err != nil {
			t.Fatal(err)
		}
		l.bind(&renderer{})
		l.release()
		return l
	}
	cached := func(b *Bundle) bool {
		key, _ := bundleKey(b)
		_, ok := c.entries.peek(key)
		return ok
	}
	a, b, d := bundle("1"), bundle("2"), bundle("3")
	lease(a)
	lease(b)
	lease(a) // a is now the most recently used
	lease(d) // evicts b
	if !cached(a) || cached(b) || !cached(d) {
		t.Fatalf("cached a, b, d = %v, %v, %v; want true, false, true", cached(a), cached(b), cached(d))
	}
	if got, want := c.entries.len(), 2; got != want {
		t.Fatalf("entries = %d, want %d", got, want)
	}
	if l := lease(bundle(strings.Repeat("x", 60))); l.e != nil {
		t.Fatal("a bundle over maxOne was cached")
	}
	big1, big2 := bundle(strings.Repeat("y", 45)), bundle(strings.Repeat("z", 45))
	lease(big1)
	lease(big2) // 2 × (2 + 2 + 45) bytes > 90: evicts big1
	if cached(big1) || !cached(big2) || c.entries.bytes > 90 {
		t.Fatalf("cached big1, big2 = %v, %v with %d bytes; want false, true, ≤ 90", cached(big1), cached(big2), c.entries.bytes)
	}
	// An idle VM holds nothing of its last render.
	key, _ := bundleKey(big2)
	if e, _ := c.entries.peek(key); e == nil || e.idle == nil || e.idle.h.r != nil {
		t.Fatal("the idle VM is missing or still bound to its last render")
	}
}

// TestBundleKeyUnambiguous: moving bytes between a path and its text, or
// between two files, changes the key.
func TestBundleKeyUnambiguous(t *testing.T) {
	keys := map[[32]byte]string{}
	for name, b := range map[string]*Bundle{
		"a":  {Entrypoint: "/a", Files: map[string]string{"/a": "bc"}},
		"ab": {Entrypoint: "/a", Files: map[string]string{"/ab": "c"}},
		"2f": {Entrypoint: "/a", Files: map[string]string{"/a": "b", "/c": ""}},
		"ep": {Entrypoint: "/ab", Files: map[string]string{"/a": "bc"}},
	} {
		k, _ := bundleKey(b)
		if prev, ok := keys[k]; ok {
			t.Fatalf("bundles %s and %s have the same key", prev, name)
		}
		keys[k] = name
	}
}

// TestRenderResultsAreCopies: a render of the same text decodes from the
// cache, equal to the first, and changing a returned pattern changes no
// later result. An empty group stays a group.
func TestRenderResultsAreCopies(t *testing.T) {
	b := uniqueBundle(t, `{
  runVars: {list: ['a']},
  run: [{id: 'one', onChange: ['two'], exec: {env: {A: 'a'}}}, {id: 'g', commands: []}, {id: 'two'}],
}`)
	first, err := b.Render(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := mustJSON(t, first.Pattern)
	if !first.Pattern.Run[1].IsGroup() {
		t.Fatal("the empty group is not a group")
	}
	key := sha256.Sum256(first.JSON)
	decoded.mu.Lock()
	_, ok := decoded.entries.peek(key)
	decoded.mu.Unlock()
	if !ok {
		t.Fatal("the decoded pattern is not cached")
	}
	for range 2 {
		res, err := b.Render(t.Context(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := mustJSON(t, res.Pattern); got != want {
			t.Fatalf("pattern = %s, want %s", got, want)
		}
		if !res.Pattern.Run[1].IsGroup() {
			t.Fatal("the empty group of a cached pattern is not a group")
		}
		p := res.Pattern
		p.Run[0].ID = "changed"
		p.Run[0].OnChange[0] = "changed"
		p.Run[0].Exec.Env["A"] = "changed"
		p.Run[1].Commands = append(p.Run[1].Commands, p.Run[0])
		p.RunVars["list"].([]any)[0] = "changed"
		p.Run = p.Run[:1]
	}
	if got := mustJSON(t, first.Pattern); got != want {
		t.Fatalf("first pattern = %s, want %s", got, want)
	}
}
