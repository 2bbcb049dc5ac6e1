package writer

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Reserved names in the target. Every one starts with "..".
const (
	dataLink     = "..data"
	dataTmpLink  = "..data_tmp"
	manifestName = "..dispenser-manifest"
	tmpPrefix    = "..tmp-"
	asidePrefix  = "..displaced-"
)

const osCreateNew = os.O_WRONLY | os.O_CREATE | os.O_EXCL

// state is one reconcile run: the open target and what it has done so far.
type state struct {
	w     *Writer
	root  *os.Root
	valid []string // valid desired keys, sorted
	res   Result
}

// tempName returns prefix plus a random suffix, short enough for NAME_MAX.
func tempName(prefix string) string {
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + "-" + strconv.FormatUint(rand.Uint64(), 36)
}

// writeNew creates name (which must not exist) with data, then sets mode and
// owner explicitly: the umask and the process's ids must not matter.
func (s *state) writeNew(name string, data []byte) (err error) {
	o := s.w.opts
	f, err := s.root.OpenFile(name, osCreateNew, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", name, cerr)
		}
		if err != nil {
			s.root.Remove(name)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(o.FileMode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if o.UID != -1 || o.GID != -1 {
		if err := f.Chown(o.UID, o.GID); err != nil {
			return fmt.Errorf("chown %s: %w", name, err)
		}
	}
	if o.Fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", name, err)
		}
	}
	return nil
}

// matches reports whether name is a regular file with content data and the
// configured mode and owner. Any error counts as a mismatch: the following
// write reports the real problem.
func (s *state) matches(name string, data []byte) bool {
	fi, err := s.root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(data)) || !s.attrsOK(fi) {
		return false
	}
	got, err := s.root.ReadFile(name)
	return err == nil && bytes.Equal(got, data)
}

func (s *state) attrsOK(fi fs.FileInfo) bool {
	o := s.w.opts
	if fi.Mode().Perm() != o.FileMode || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	return (o.UID == -1 || int(st.Uid) == o.UID) && (o.GID == -1 || int(st.Gid) == o.GID)
}

// mkdir creates directory name with the configured mode, applied explicitly.
func (s *state) mkdir(name string) error {
	if err := s.root.Mkdir(name, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", name, err)
	}
	if err := s.root.Chmod(name, s.w.opts.DirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	return nil
}

// syncDir fsyncs directory name if Fsync is set.
func (s *state) syncDir(name string) error {
	if !s.w.opts.Fsync {
		return nil
	}
	f, err := s.root.Open(name)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	return nil
}

// clearUnmanaged gets an entry the writer did not create out of the way of
// key. Symlinks are removed (that deletes no data); files and directories
// are renamed aside to a reserved "..displaced-" name, so nothing is lost.
func (s *state) clearUnmanaged(key, name string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		s.w.log.Warn("removing symlink dispenser did not create, a key needs its name", "key", key, "path", name)
		if err := s.root.Remove(name); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	}
	aside := path.Join(path.Dir(name), tempName(asidePrefix+path.Base(name)))
	s.w.log.Warn("moving aside an entry dispenser did not create, a key needs its name", "key", key, "path", name, "moved_to", aside)
	if err := s.root.Rename(name, aside); err != nil {
		return fmt.Errorf("move %s aside: %w", name, err)
	}
	return nil
}

// replaceWithSymlink makes name a symlink to target, atomically replacing a
// file or symlink already there.
func (s *state) replaceWithSymlink(target, name string) error {
	tmp := path.Join(path.Dir(name), tempName(tmpPrefix+"link"))
	if err := s.root.Symlink(target, tmp); err != nil {
		return fmt.Errorf("create symlink %s: %w", name, err)
	}
	if err := s.root.Rename(tmp, name); err != nil {
		s.root.Remove(tmp)
		return fmt.Errorf("create symlink %s: %w", name, err)
	}
	return nil
}

// removeFile removes a non-directory, reporting whether it existed. It does
// nothing if a parent is not a real directory: a symlink there could lead
// into the current generation.
func (s *state) removeFile(name string) (bool, error) {
	for _, d := range parents(name) {
		if fi, err := s.root.Lstat(d); err != nil || !fi.IsDir() {
			return false, nil
		}
	}
	fi, err := s.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", name, err)
	}
	if fi.IsDir() {
		return false, nil
	}
	if err := s.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove %s: %w", name, err)
	}
	return true, nil
}

// removeEmptyDirs removes the given directories deepest first if they are
// empty, returning those that are gone.
func (s *state) removeEmptyDirs(dirs []string) map[string]bool {
	sorted := append([]string(nil), dirs...)
	sortDeepestFirst(sorted)
	gone := make(map[string]bool)
	for _, d := range sorted {
		err := s.root.Remove(d)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			gone[d] = true
		}
	}
	return gone
}

func sortDeepestFirst(dirs []string) {
	slices.SortFunc(dirs, func(a, b string) int {
		if c := cmp.Compare(strings.Count(b, "/"), strings.Count(a, "/")); c != 0 {
			return c
		}
		return strings.Compare(b, a)
	})
}

// parents returns the directories key needs, outermost first.
func parents(key string) []string {
	var ds []string
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			ds = append(ds, key[:i])
		}
	}
	return ds
}

// topName returns the first segment of key.
func topName(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return key
}

// removeReservedLeftovers removes temp entries left at the top of the target
// by a crashed run.
func (s *state) removeReservedLeftovers(entries []fs.DirEntry) {
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, tmpPrefix) || n == dataTmpLink {
			s.root.RemoveAll(n)
		}
	}
}

func (s *state) readTop() ([]fs.DirEntry, error) {
	f, err := s.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("read target: %w", err)
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("read target: %w", err)
	}
	return entries, nil
}
