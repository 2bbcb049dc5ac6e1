package pattern

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-jsonnet"
)

// Bundle is a pattern's source: the entrypoint and every file it imports,
// transitively. It is the JSON shape of the JWT claim etchaPattern
// (spec §3.2): {"entrypoint": "/patterns/x.jsonnet", "files": {path: text}}.
//
// Paths are slash-separated and start with "/"; they are relative to the
// directory the bundle was loaded from (Root), not to the filesystem root.
type Bundle struct {
	Entrypoint string            `json:"entrypoint"`
	Files      map[string]string `json:"files"`

	// Root is the absolute directory on disk that the bundle paths are
	// relative to. Load and FromJsonnet set it; it is empty for a bundle
	// decoded from a JWT. Only getPath() reads it. It is not serialised.
	Root string `json:"-"`
}

// snippetName is the bundle path given to raw Jsonnet (FromJsonnet).
const snippetName = "etcha-snippet.jsonnet"

// Load reads the Jsonnet file p and every file it imports (import,
// importstr, importbin, transitively) into a Bundle. Imports resolve
// relative to the importing file, as in Jsonnet; there are no library
// search paths. Bundle paths are relative to the working directory, or,
// when an import leaves it, to the deepest common ancestor of all files
// (spec §3.2); when any import is absolute they are absolute paths. Nothing is evaluated: native
// functions do not run. A parse error names file:line:col.
func Load(p string) (*Bundle, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("load pattern %s: %w", p, err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("load pattern %s: %w", p, err)
	}
	b, err := collect(abs, src)
	if err != nil {
		return nil, fmt.Errorf("load pattern %s: %w", p, err)
	}
	return b, nil
}

// FromJsonnet makes a Bundle from raw Jsonnet text, as if it were a file
// named etcha-snippet.jsonnet in the working directory: its imports are
// read from disk relative to the working directory. Use WrapRun first for
// `etcha local "<jsonnet>"` (spec §1.2).
func FromJsonnet(snippet string) (*Bundle, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("load jsonnet: %w", err)
	}
	b, err := collect(filepath.Join(wd, snippetName), []byte(snippet))
	if err != nil {
		return nil, fmt.Errorf("load jsonnet: %w", err)
	}
	return b, nil
}

// WrapRun wraps a Jsonnet expression as a pattern whose run list holds it:
// {run: [<snippet>]}, the way `etcha local` treats an argument that is not
// a .jsonnet path.
func WrapRun(snippet string) string {
	return "{run: [" + snippet + "\n]}"
}

// collect walks the imports of the entry file (whose text is given) using
// go-jsonnet's dependency finder with a recording disk importer.
func collect(entry string, src []byte) (*Bundle, error) {
	imp := &diskImporter{
		entry: entry,
		read:  map[string]jsonnet.Contents{entry: jsonnet.MakeContentsRaw(src)},
	}
	vm := jsonnet.MakeVM()
	vm.Importer(imp)
	vm.ErrorFormatter = lineFormatter{}
	if _, err := vm.FindDependencies("", []string{entry}); err != nil {
		return nil, errors.New(lineFormatter{}.Format(err))
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(imp.read))
	for p := range imp.read {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	root := wd
	switch {
	case imp.absolute:
		// An absolute import only resolves in the bundle if bundle paths
		// are the real absolute paths.
		root = string(filepath.Separator)
	case !allUnder(wd, paths):
		root = commonDir(paths)
	}
	b := &Bundle{Files: make(map[string]string, len(paths)), Root: root}
	for _, p := range paths {
		key := bundlePath(root, p)
		b.Files[key] = imp.read[p].String()
		if p == entry {
			b.Entrypoint = key
		}
	}
	return b, nil
}

// diskImporter resolves imports on disk relative to the importing file and
// remembers every file it read, returning the same Contents for the same
// path as go-jsonnet requires.
type diskImporter struct {
	entry    string
	read     map[string]jsonnet.Contents
	absolute bool // some import used an absolute path
}

func (d *diskImporter) Import(from, imported string) (jsonnet.Contents, string, error) {
	if c, at, ok := builtin(imported); ok {
		return c, at, nil // not recorded: the bundle never carries it
	}
	p := imported
	if from != "" && filepath.IsAbs(imported) {
		d.absolute = true
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(from), p)
	}
	p = filepath.Clean(p)
	if c, ok := d.read[p]; ok {
		return c, p, nil
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: file %s does not exist", imported, p)
	}
	if err != nil {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", imported, err)
	}
	c := jsonnet.MakeContentsRaw(data)
	d.read[p] = c
	return c, p, nil
}

func allUnder(dir string, paths []string) bool {
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return false
		}
	}
	return true
}

// commonDir returns the deepest directory containing every path.
func commonDir(paths []string) string {
	dir := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for !strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator)) {
			parent := filepath.Dir(dir)
			if parent == dir {
				return dir
			}
			dir = parent
		}
	}
	return dir
}

func bundlePath(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return filepath.ToSlash(p)
	}
	return "/" + filepath.ToSlash(rel)
}

// NormalPath returns the bundle path p in normal form: slash-cleaned and
// "/"-prefixed, so "main.jsonnet", "/main.jsonnet" and "/x/../main.jsonnet"
// are all "/main.jsonnet" (a JWT may carry either form, spec §9 #24). It
// must agree with token.PatternPath, which applies the same rule to JWT
// claims (token cannot import this package).
func NormalPath(p string) string {
	return path.Clean("/" + p)
}

// normal returns the bundle's files keyed by NormalPath and the
// normalised entrypoint. Two file keys with the same normal form are
// refused: which text an import saw would depend on map order.
func (b *Bundle) normal() (map[string]jsonnet.Contents, string, error) {
	if b == nil || b.Entrypoint == "" {
		return nil, "", errors.New("pattern bundle has no entrypoint")
	}
	files := make(map[string]jsonnet.Contents, len(b.Files))
	from := make(map[string]string, len(b.Files))
	for p, text := range b.Files {
		n := NormalPath(p)
		if prev, ok := from[n]; ok {
			a, b := sortedPair(prev, p)
			return nil, "", fmt.Errorf("pattern bundle files %q and %q are the same path %s; rebuild the pattern so each file appears once", a, b, n)
		}
		from[n] = p
		files[n] = jsonnet.MakeContents(text)
	}
	entry := NormalPath(b.Entrypoint)
	if _, ok := files[entry]; !ok {
		return nil, "", fmt.Errorf("pattern bundle entrypoint %s is not in its files", b.Entrypoint)
	}
	return files, entry, nil
}

// sortedPair returns a and b in order, so error messages do not depend on
// map iteration order.
func sortedPair(a, b string) (string, string) {
	if b < a {
		return b, a
	}
	return a, b
}

// bundleImporter serves imports from a bundle's files only, plus the
// built-in NativeLibPath; it never reads the disk, so a pattern renders the
// same on every machine.
// It is never modified after it is made, so one importer may serve several
// VMs at once.
type bundleImporter struct {
	files map[string]jsonnet.Contents
}

func (bi *bundleImporter) Import(from, imported string) (jsonnet.Contents, string, error) {
	if c, at, ok := builtin(imported); ok {
		return c, at, nil
	}
	key, err := resolve(from, imported)
	if err != nil {
		return jsonnet.Contents{}, "", err
	}
	c, ok := bi.files[key]
	if !ok {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q is not in the pattern bundle (looked for %s)", imported, key)
	}
	return c, key, nil
}

// resolve maps an import to a bundle path; imports that climb above the
// bundle root are refused rather than silently clamped to it.
func resolve(from, imported string) (string, error) {
	if path.IsAbs(imported) {
		return path.Clean(imported), nil
	}
	rel := path.Join(strings.TrimPrefix(path.Dir(from), "/"), imported)
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("import %q is not in the pattern bundle (it leaves the bundle root)", imported)
	}
	return "/" + rel, nil
}
