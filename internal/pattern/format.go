package pattern

import (
	"errors"

	"github.com/google/go-jsonnet/formatter"
)

// Format returns src in canonical jsonnetfmt style (2-space indent, single
// quotes, trailing commas; go-jsonnet's default options). `etcha lint -f`
// reports a file whose Format output differs from its content. path is
// used only in error messages; a syntax error names path:line:col.
func Format(path string, src []byte) ([]byte, error) {
	out, err := formatter.Format(path, string(src), formatter.DefaultOptions())
	if err != nil {
		return nil, errors.New(lineFormatter{}.Format(err))
	}
	return []byte(out), nil
}
