package etcha

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// search is an upward search for a file that was not named on the command
// line (etcha.jsonnet, a bare build.signingKeyPath). Such a file is found,
// not chosen, so it is trusted only if nobody else could have put it there:
// a config file's native functions (getCmd) run commands, and a planted one
// in a shared parent such as /tmp would run them as whoever runs etcha
// below it.
type search struct {
	// home ends the search: its parents are not searched. "" means the
	// search goes up to the filesystem root.
	home string
	// euid owns trusted files (as does root).
	euid int
	// logger receives a warning for each skipped file.
	logger *slog.Logger
}

// newSearch returns a search stopping at home; "" means HOME from env,
// else the user's home directory.
func newSearch(home string, env []string, logger *slog.Logger) search {
	if home == "" {
		home = envMap(env)["HOME"]
	}
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return search{home: home, euid: os.Geteuid(), logger: logger}
}

// find looks for name in dir and its parents, up to and including the
// home directory (when dir is below it) or else the filesystem root. A
// file that exists but is not trusted (see untrusted) is skipped with a
// warning naming the file and why, and the search goes on upward. It
// returns fs.ErrNotExist if no trusted file is found.
func (s search) find(dir, name string) (string, error) {
	dir = filepath.Clean(dir)
	home := ""
	if s.home != "" {
		home = filepath.Clean(s.home)
	}
	for {
		p := filepath.Join(dir, name)
		why, err := s.untrusted(p)
		switch {
		case err == nil && why == "":
			return p, nil
		case err == nil:
			s.logger.Warn("ignoring a file found by searching parent directories: "+why+"; fix its owner or mode, or name the file explicitly", "path", p)
		case !errors.Is(err, fs.ErrNotExist):
			return "", err
		}
		parent := filepath.Dir(dir)
		if dir == home || parent == dir {
			return "", fs.ErrNotExist
		}
		dir = parent
	}
}

// untrusted returns why the file p must not be used ("" if it may), or an
// error if it cannot be examined (fs.ErrNotExist if it does not exist). A
// trusted file is a regular file owned by the effective user or root and
// not writable by group or others; a symlink must itself be owned by the
// effective user or root, and its target must qualify.
func (s search) untrusted(p string) (string, error) {
	li, err := os.Lstat(p)
	if err != nil {
		return "", err
	}
	if li.Mode()&fs.ModeSymlink != 0 {
		if why := s.badOwner(li); why != "" {
			return "symlink " + why, nil
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "it is not a regular file", nil
	}
	if why := s.badOwner(fi); why != "" {
		return why, nil
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Sprintf("it is writable by group or others (mode %s)", fi.Mode().Perm()), nil
	}
	return "", nil
}

// badOwner says why fi's owner is not trusted, or "".
func (s search) badOwner(fi fs.FileInfo) string {
	uid, ok := fileOwner(fi)
	if !ok || uid == 0 || uid == s.euid {
		return ""
	}
	return fmt.Sprintf("it is owned by uid %d, not by you (uid %d) or root", uid, s.euid)
}

// isBareName reports whether p is a file name without a directory.
func isBareName(p string) bool {
	return !strings.ContainsRune(p, filepath.Separator) && !strings.ContainsRune(p, '/')
}
