package pattern

import (
	_ "embed" // the built-in library's text
	"sync"

	"github.com/google/go-jsonnet"
)

// NativeLibPath is the import path of the built-in library of wrappers
// around the native functions with their documented default arguments
// (spec §5.1), e.g. getCmd(command, fallback=null, cache=false):
//
//	local n = import 'etcha/native.libsonnet';
//	n.getEnv('HOME')
//
// Both importers serve it from memory, whatever file imports it: it is
// never read from disk and never copied into a bundle (so a JWT does not
// carry it, and the runner's copy is used). An import of exactly this
// string always gets the built-in library, even if a file of that name
// exists next to the pattern or in the bundle.
const NativeLibPath = "etcha/native.libsonnet"

//go:embed native.libsonnet
var nativeLib string

// nativeLibContents is the built-in library as go-jsonnet Contents, made
// once: go-jsonnet requires an importer to return the same Contents for
// the same path, and one value shared by every importer satisfies that for
// all of them. It is never modified, so it is safe for concurrent use.
var nativeLibContents = sync.OnceValue(func() jsonnet.Contents { return jsonnet.MakeContents(nativeLib) })

// builtin returns the built-in library if imported names it.
func builtin(imported string) (jsonnet.Contents, string, bool) {
	if imported != NativeLibPath {
		return jsonnet.Contents{}, "", false
	}
	return nativeLibContents(), NativeLibPath, true
}
