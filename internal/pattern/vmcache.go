package pattern

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io"
	"sort"
	"sync"

	"github.com/google/go-jsonnet"
)

// Limits of the parsed-bundle cache. Sizes count the bundle's source text
// (paths and file contents). The cached syntax trees take about 25 times
// the text (measured on the 100-command pattern of BenchmarkVerifyRender),
// so the cache holds at most about 25 MiB of trees, plus, per entry whose
// pattern imports it, the tree of the built-in library (about 45 KiB). A
// bundle over vmCacheMaxOne is never cached.
const (
	vmCacheEntries = 32
	vmCacheBytes   = 1 << 20
	vmCacheMaxOne  = vmCacheBytes / 4
)

// bundles is the process's parsed-bundle cache. Every Render and Evaluate
// goes through it, so a source re-running the same JWT, or a command
// rendering the same file twice, parses it once.
var bundles = newVMCache(vmCacheEntries, vmCacheBytes, vmCacheMaxOne)

// vmCache keeps, per bundle content, the bundle's files as go-jsonnet
// Contents and one idle go-jsonnet VM whose import cache holds the parsed,
// desugared and analysed syntax tree of every file a render of the bundle
// imported (parsing is most of the work of a render, issue 10 item 5). The
// key is a SHA-256 of the entrypoint and every file's path and text, so a
// bundle that differs in any byte is a different entry.
//
// It caches only what depends on the text alone. A VM's evaluated values
// (an imported file's value, which may hold the results of natives such as
// getFile or getCmd) are dropped before and after each render, and its
// natives call the renderer of the render in progress, so natives run
// again on every render.
//
// It is safe for concurrent use. A VM is used by one render at a time: a
// render that finds the entry's VM in use makes a fresh one, and the first
// VM to come back becomes the idle one. The cache holds at most max
// entries and maxBytes of source text, evicting the least recently used.
type vmCache struct {
	maxOne int

	mu      sync.Mutex
	entries *lru[[sha256.Size]byte, *vmEntry]
}

func newVMCache(max, maxBytes, maxOne int) *vmCache {
	return &vmCache{maxOne: maxOne, entries: newLRU[[sha256.Size]byte, *vmEntry](max, maxBytes)}
}

// vmEntry is one cached bundle.
type vmEntry struct {
	key   [sha256.Size]byte
	imp   *bundleImporter
	entry string // normalised entrypoint
	idle  *cachedVM
}

// cachedVM is a VM with its natives bound to h.
type cachedVM struct {
	vm *jsonnet.VM
	h  *host
}

// lease is one render's use of a bundle: its importer and entrypoint, and
// a VM that no other render uses until release.
type lease struct {
	c     *vmCache
	e     *vmEntry // nil when the bundle is not cached
	imp   *bundleImporter
	entry string
	vm    *cachedVM
}

// lease returns the bundle's validated files and a VM for one render,
// from the cache when the same bundle was seen before. The caller calls
// bind, evaluates, then release.
func (c *vmCache) lease(b *Bundle) (*lease, error) {
	if b == nil || b.Entrypoint == "" {
		_, _, err := b.normal()
		return nil, err
	}
	key, size := bundleKey(b)
	c.mu.Lock()
	if e, ok := c.entries.get(key); ok {
		vm := e.idle
		e.idle = nil
		c.mu.Unlock()
		return &lease{c: c, e: e, imp: e.imp, entry: e.entry, vm: vm}, nil
	}
	c.mu.Unlock()
	files, entry, err := b.normal() // validation errors are not cached
	if err != nil {
		return nil, err
	}
	l := &lease{c: c, imp: &bundleImporter{files: files}, entry: entry}
	if size <= c.maxOne {
		c.mu.Lock()
		// Another render may have added the same bundle meanwhile: use its entry.
		l.e = c.entries.add(key, size, &vmEntry{key: key, imp: l.imp, entry: entry})
		c.mu.Unlock()
	}
	return l, nil
}

// bind returns the lease's VM with its natives calling r, and no value
// left from an earlier render.
func (l *lease) bind(r *renderer) *jsonnet.VM {
	if l.vm == nil {
		h := &host{}
		l.vm = &cachedVM{vm: newVM(l.imp, h), h: h}
	}
	l.vm.h.r = r
	l.vm.vm.ExtReset() // flushes the values of imported files
	return l.vm.vm
}

// release unbinds the VM from the render and keeps it as the entry's idle
// VM, unless the entry has one already or was evicted.
func (l *lease) release() {
	if l.vm == nil {
		return
	}
	l.vm.h.r = nil
	l.vm.vm.ExtReset()
	if l.e == nil {
		return
	}
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if cur, ok := l.c.entries.peek(l.e.key); ok && cur == l.e && l.e.idle == nil {
		l.e.idle = l.vm
	}
}

// newVM returns a VM serving imports from imp, with the natives of h.
func newVM(imp jsonnet.Importer, h *host) *jsonnet.VM {
	vm := jsonnet.MakeVM()
	vm.Importer(imp)
	vm.ErrorFormatter = lineFormatter{}
	for _, f := range natives(h) {
		vm.NativeFunction(f)
	}
	return vm
}

// bundleKey hashes the entrypoint and every file, path and text, in path
// order, each length-prefixed so that no two bundles hash the same input.
// size is the number of bytes hashed.
func bundleKey(b *Bundle) (key [sha256.Size]byte, size int) {
	h := sha256.New()
	size += put(h, b.Entrypoint)
	paths := make([]string, 0, len(b.Files))
	for p := range b.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		size += put(h, p) + put(h, b.Files[p])
	}
	h.Sum(key[:0])
	return key, size
}

func put(h hash.Hash, s string) int {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	io.WriteString(h, s)
	return len(s)
}
