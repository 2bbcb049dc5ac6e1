//go:build !unix

package etcha

import "io/fs"

// fileOwner reports no owner: this platform has no uids, so only the mode
// check applies.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }
