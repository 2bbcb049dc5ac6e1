package writer

import (
	"fmt"
	"strings"
)

// Limits on key length, matching common Linux NAME_MAX and PATH_MAX.
const (
	maxSegment = 255
	maxKey     = 4096
)

// Rejection tokens, stable for logs and metrics.
const (
	ReasonEmpty        = "empty"
	ReasonNUL          = "nul"
	ReasonTooLong      = "too-long"
	ReasonAbsolute     = "absolute"
	ReasonEmptySegment = "empty-segment"
	ReasonEscapes      = "escapes-target"
	ReasonDotSegment   = "dot-segment"
	ReasonReserved     = "reserved"
	ReasonConflict     = "conflict"
	// ReasonUnwritable: the key is valid but its file could not be written
	// (a directory in the way that cannot be moved, such as a mount point;
	// a parent directory another user owns; an I/O error on its file).
	// The writer retries it on every later call.
	ReasonUnwritable = "unwritable"
)

// Rejection says why a key is not written. It is also the error returned by
// [ValidateKey].
type Rejection struct {
	Key    string // the key as received, relative to the prefix
	Reason string // short stable token, one of the Reason* constants
	detail string // operator-facing explanation, without the key
}

// Error returns the full operator message, e.g.
// `key "../x" rejected: path escapes target; rename the key`.
func (r Rejection) Error() string {
	detail := r.detail
	if detail == "" {
		detail = r.Reason
	}
	return fmt.Sprintf("key %q rejected: %s", r.Key, detail)
}

var _ error = Rejection{}

func reject(key, reason, detail string) Rejection {
	return Rejection{Key: key, Reason: reason, detail: detail}
}

// ValidateKey reports whether key may become a file path under the target
// directory. It returns nil or a [Rejection]. Keys are relative paths with "/"
// separators; rejected are: the empty key, NUL bytes, a leading "/" (the
// caller strips the prefix including its trailing separator, so a remaining
// "/" means the etcd key had a doubled one), empty segments ("a//b", "a/"),
// "." and ".." segments, segments starting with ".." (reserved for the
// writer's internal files), segments over 255 bytes and keys over 4096 bytes.
//
// ValidateKey looks at one key only; a key can also be rejected with reason
// "conflict" when it names a file where another key needs a directory.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return reject(key, ReasonEmpty, "empty key names the target directory itself; rename the key")
	case strings.IndexByte(key, 0) >= 0:
		return reject(key, ReasonNUL, "contains a NUL byte; rename the key")
	case len(key) > maxKey:
		return reject(key, ReasonTooLong, fmt.Sprintf("longer than %d bytes; shorten the key", maxKey))
	case key[0] == '/':
		return reject(key, ReasonAbsolute, `absolute path (leading "/" after the prefix); remove the extra "/" from the key`)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := validateSegment(key, seg); err != nil {
			return err
		}
	}
	return nil
}

func validateSegment(key, seg string) error {
	switch {
	case seg == "":
		return reject(key, ReasonEmptySegment, `empty path segment ("//" or trailing "/"); rename the key`)
	case seg == "..":
		return reject(key, ReasonEscapes, "path escapes target; rename the key")
	case seg == ".":
		return reject(key, ReasonDotSegment, `"." path segment; rename the key`)
	case strings.HasPrefix(seg, ".."):
		return reject(key, ReasonReserved, `segment starts with ".." which is reserved for dispenser's own files; rename the key`)
	case len(seg) > maxSegment:
		return reject(key, ReasonTooLong, fmt.Sprintf("path segment longer than %d bytes; shorten the key", maxSegment))
	}
	return nil
}
