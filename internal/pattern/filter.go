package pattern

import (
	"fmt"
	"strconv"
	"strings"
)

// step is one element of a get() filter: an object key or an array index.
type step struct {
	key   string
	index int
	isIdx bool
}

// parseFilter parses the jq-style path subset get() supports: "." alone,
// then any sequence of .name, ."quoted name", ["quoted name"] and [n]
// (n may be negative, counting from the end). For example .a.b[0].
func parseFilter(f string) ([]step, error) {
	if !strings.HasPrefix(f, ".") {
		return nil, fmt.Errorf("filter %q must start with '.', such as .a.b[0]", f)
	}
	var steps []step
	rest := f
	for rest != "" && rest != "." {
		var (
			s   step
			err error
		)
		switch {
		case strings.HasPrefix(rest, `."`):
			s.key, rest, err = quoted(rest[1:])
		case strings.HasPrefix(rest, `.[`):
			rest = rest[1:]
			continue
		case strings.HasPrefix(rest, "."):
			end := strings.IndexAny(rest[1:], ".[")
			if end < 0 {
				end = len(rest) - 1
			}
			s.key, rest = rest[1:end+1], rest[end+1:]
			if s.key == "" {
				err = fmt.Errorf("empty name")
			}
		case strings.HasPrefix(rest, `["`):
			s.key, rest, err = quoted(rest[1:])
			if err == nil {
				rest, err = closeBracket(rest)
			}
		case strings.HasPrefix(rest, "["):
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				err = fmt.Errorf("missing ]")
				break
			}
			s.index, err = strconv.Atoi(rest[1:end])
			s.isIdx, rest = true, rest[end+1:]
		default:
			err = fmt.Errorf("unexpected %q", rest)
		}
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", f, err)
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// quoted reads a JSON-style double-quoted string at the start of s.
func quoted(s string) (string, string, error) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			return v, s[i+1:], err
		}
	}
	return "", "", fmt.Errorf("unterminated string")
}

func closeBracket(s string) (string, error) {
	if !strings.HasPrefix(s, "]") {
		return "", fmt.Errorf("missing ]")
	}
	return s[1:], nil
}

// walk applies steps to v; a missing key, an index out of range or a type
// mismatch yields nil, like jq's null.
func walk(v any, steps []step) any {
	for _, s := range steps {
		switch cur := v.(type) {
		case map[string]any:
			if s.isIdx {
				return nil
			}
			v = cur[s.key]
		case []any:
			if !s.isIdx {
				return nil
			}
			i := s.index
			if i < 0 {
				i += len(cur)
			}
			if i < 0 || i >= len(cur) {
				return nil
			}
			v = cur[i]
		default:
			return nil
		}
	}
	return v
}
