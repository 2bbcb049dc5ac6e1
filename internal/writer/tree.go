package writer

import (
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// tree holds descriptors of a directory and of real directories below it,
// each opened relative to its parent with O_NOFOLLOW and kept for the run,
// so no directory name is resolved twice.
type tree struct {
	fds map[string]int // "." is the root
	st  map[string]unix.Stat_t
}

func newTree(fd int) (*tree, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &tree{fds: map[string]int{".": fd}, st: map[string]unix.Stat_t{".": st}}, nil
}

// open returns the descriptor of directory d, opening it and its parents if
// needed. It fails (ELOOP, ENOTDIR, ENOENT) unless every component is a real
// directory.
func (t *tree) open(d string) (int, error) {
	if fd, ok := t.fds[d]; ok {
		return fd, nil
	}
	pfd, err := t.open(path.Dir(d))
	if err != nil {
		return -1, err
	}
	fd, err := openDir(pfd, path.Base(d))
	if err != nil {
		return -1, err
	}
	return fd, t.add(d, fd)
}

func (t *tree) has(d string) bool {
	_, ok := t.fds[d]
	return ok
}

func (t *tree) add(d string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	t.fds[d], t.st[d] = fd, st
	return nil
}

// forget closes d and everything below it, after d was moved or removed.
func (t *tree) forget(d string) {
	for p, fd := range t.fds {
		if p == d || strings.HasPrefix(p, d+"/") {
			unix.Close(fd)
			delete(t.fds, p)
			delete(t.st, p)
		}
	}
}

func (t *tree) close() {
	if t != nil {
		for _, fd := range t.fds {
			unix.Close(fd)
		}
	}
}

// fileID identifies an inode.
type fileID struct{ dev, ino uint64 }

func idOf(st unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

func openDir(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, oDir, 0)
}

func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

func isDir(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isReg(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFREG }
func isLink(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFLNK }

func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// listDir returns the entries of the directory open as fd, without using
// up fd.
func listDir(fd int) ([]os.DirEntry, error) {
	dup, err := unix.Openat(fd, ".", oDir, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	return f.ReadDir(-1)
}

// split returns the directory of name ("." at the top) and its last segment.
func split(name string) (string, string) {
	return path.Dir(name), path.Base(name)
}
