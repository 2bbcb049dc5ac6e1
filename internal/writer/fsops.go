package writer

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Reserved names in the target. Every one starts with "..".
const (
	dataLink     = "..data"
	dataTmpLink  = "..data_tmp"
	manifestName = "..dispenser-manifest"
	tmpPrefix    = "..tmp-"
	asidePrefix  = "..displaced-"
)

// Flags for openat. Every open refuses a symlink in the last component; the
// components before it are descriptors already checked.
const (
	oDir  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	oRead = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	oNew  = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// state is one reconcile run: the open target and what it has done so far.
type state struct {
	w     *Writer
	top   *tree    // the target directory and the real directories below it
	valid []string // valid desired keys: sorted in a full run; for a fresh generation in a delta run, all of them unsorted
	full  bool     // a Sync: the disk is inspected, not trusted
	res   Result
	wrote map[string]bool      // keys whose file was (re)written
	bad   map[string]Rejection // keys found unwritable in this run
}

// tempName returns prefix plus a random suffix, short enough for NAME_MAX.
func tempName(prefix string) string {
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + "-" + strconv.FormatUint(rand.Uint64(), 36)
}

// fileGID is the group every file and directory the writer creates gets:
// explicit, so a setgid parent cannot choose it.
func (w *Writer) fileGID() int {
	if w.opts.GID != -1 {
		return w.opts.GID
	}
	return w.egid
}

// ownedFile reports whether st could be a file the writer made: owned by
// the configured owner, or without one by the writer's own uid.
func (w *Writer) ownedFile(st *unix.Stat_t) bool {
	if w.opts.UID != -1 {
		return int(st.Uid) == w.opts.UID
	}
	return int(st.Uid) == w.euid
}

// writeNew creates name in directory dirfd (it must not exist) with data,
// then sets owner and mode on the descriptor: chown first, since it may
// clear mode bits, and the group explicitly. In a directory the writer
// made (own: a generation or a directory in one, never setgid) a new file
// already has the writer's uid and gid, and with w.exact the mode too, so
// those calls are left out when they would change nothing. If st is not
// nil it receives the new file's stat. Each file costs a few system calls
// (open, write, close, then chown, chmod, fsync where needed), no more.
func (s *state) writeNew(dirfd int, name, shown string, data []byte, own bool, st *unix.Stat_t) (err error) {
	o := s.w.opts
	fd, err := unix.Openat(dirfd, name, oNew, uint32(o.FileMode))
	if err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	defer func() {
		if err != nil {
			var mine unix.Stat_t
			ferr := unix.Fstat(fd, &mine)
			unix.Close(fd)
			if ferr == nil {
				removeSame(dirfd, name, &mine)
			}
			return
		}
		if cerr := unix.Close(fd); cerr != nil {
			err = fmt.Errorf("write %s: %w", shown, cerr)
		}
	}()
	if st != nil {
		if err := unix.Fstat(fd, st); err != nil {
			return fmt.Errorf("write %s: %w", shown, err)
		}
	}
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", shown, err)
		}
		rest = rest[n:]
	}
	if !own || o.UID != -1 || o.GID != -1 {
		if err := unix.Fchown(fd, o.UID, s.w.fileGID()); err != nil {
			return fmt.Errorf("chown %s: %w", shown, err)
		}
	}
	if !own || !s.w.exact || o.UID != -1 {
		if err := unix.Fchmod(fd, uint32(o.FileMode)); err != nil {
			return fmt.Errorf("chmod %s: %w", shown, err)
		}
	}
	if o.Fsync {
		if err := unix.Fsync(fd); err != nil {
			return fmt.Errorf("fsync %s: %w", shown, err)
		}
	}
	return nil
}

// job is a file to write into a generation.
type job struct {
	dirfd int // its directory in the generation
	key   string
	value []byte
	skip  bool // not to be written after all (a paged sync found it is a directory)
}

// writeFiles writes the files of jobs into generation gen with writeNew,
// several at a time when there are many: creating a file costs a few
// system calls, which run in parallel on different files.
func (s *state) writeFiles(gen string, jobs []job) error {
	one := func(j job) error {
		if j.skip {
			return nil
		}
		return s.writeNew(j.dirfd, path.Base(j.key), gen+"/"+j.key, j.value, true, nil)
	}
	workers := min(4, runtime.GOMAXPROCS(0), len(jobs)/8)
	if workers <= 1 {
		for _, j := range jobs {
			if err := one(j); err != nil {
				return err
			}
		}
		return nil
	}
	next := make(chan job)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for j := range next {
				if errs[i] == nil {
					errs[i] = one(j)
				}
			}
		})
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// removeSame unlinks name in dirfd if it is still the inode st describes.
func removeSame(dirfd int, name string, st *unix.Stat_t) {
	if now, err := lstatAt(dirfd, name); err == nil && st.Ino != 0 && now.Ino == st.Ino && now.Dev == st.Dev {
		unix.Unlinkat(dirfd, name, 0)
	}
}

// matches reports whether name in dirfd is a regular file with content
// data and the configured mode and owner. Any error counts as a mismatch:
// the following write reports the real problem.
func (s *state) matches(dirfd int, name string, data []byte) bool {
	fd, err := unix.Openat(dirfd, name, oRead, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || !isReg(&st) || st.Size != int64(len(data)) || !s.attrsOK(&st) {
		return false
	}
	got := make([]byte, len(data)+1)
	n, err := io.ReadFull(f, got)
	return n == len(data) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && bytes.Equal(got[:n], data)
}

// matchesKey reports whether name in dirfd is key's file: its value while
// the writer holds it, else the digest of what it wrote.
func (s *state) matchesKey(dirfd int, name, key string) bool {
	if v := s.w.desired[key]; v != nil {
		return s.matches(dirfd, name, v)
	}
	want, ok := s.w.disk[key]
	if !ok {
		return false
	}
	fd, err := unix.Openat(dirfd, name, oRead, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || !isReg(&st) || st.Size != int64(want.n) || !s.attrsOK(&st) {
		return false
	}
	got := make([]byte, want.n+1)
	n, err := io.ReadFull(f, got)
	return n == want.n && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && sumOf(got[:n]) == want
}

func (s *state) attrsOK(st *unix.Stat_t) bool {
	o := s.w.opts
	if os.FileMode(st.Mode&0o777) != o.FileMode || st.Mode&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX) != 0 {
		return false
	}
	return (o.UID == -1 || int(st.Uid) == o.UID) && (o.GID == -1 || int(st.Gid) == o.GID)
}

// mkdir creates directory d of tree t with the configured mode, owner and
// group, and adds it to t. It opens the new directory once and checks that
// it is the one it made (the writer's, private, empty) before chown and
// chmod on the descriptor: a name swapped in between cannot redirect them.
func (s *state) mkdir(t *tree, d string) error {
	dir, base := split(d)
	pfd, err := t.open(dir)
	if err != nil {
		return fmt.Errorf("create directory %s: %w", d, err)
	}
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", d, err)
	}
	replaced := fmt.Errorf("create directory %s: %w (another process replaced it; check who writes into the target)", d, unix.EEXIST)
	fd, err := openDir(pfd, base)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) {
		return replaced
	}
	if err != nil {
		return fmt.Errorf("create directory %s: %w", d, err)
	}
	if err := t.add(d, fd); err != nil {
		return fmt.Errorf("create directory %s: %w", d, err)
	}
	st := t.st[d]
	if int(st.Uid) != s.w.euid || st.Mode&0o077 != 0 || !emptyDir(fd) {
		t.forget(d)
		return replaced
	}
	if err := unix.Fchown(fd, -1, s.w.fileGID()); err != nil {
		return fmt.Errorf("chown %s: %w", d, err)
	}
	if err := unix.Fchmod(fd, uint32(s.w.opts.DirMode)); err != nil {
		return fmt.Errorf("chmod %s: %w", d, err)
	}
	return nil
}

func emptyDir(fd int) bool {
	entries, err := listDir(fd)
	return err == nil && len(entries) == 0
}

// syncDir fsyncs the directory open as fd if Fsync is set.
func (s *state) syncDir(fd int, shown string) error {
	if !s.w.opts.Fsync {
		return nil
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", shown, err)
	}
	return nil
}

// clearUnmanaged gets an entry the writer did not create out of the way of
// key: name in dirfd, shown as shown. Symlinks are removed (that deletes no
// data); anything else is renamed aside to a reserved "..displaced-" name,
// so nothing is lost.
func (s *state) clearUnmanaged(dirfd int, key, name, shown string, st *unix.Stat_t) error {
	if isLink(st) {
		s.w.log.Warn("removing symlink dispenser did not create, a key needs its name", "key", key, "path", shown)
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", shown, err)
		}
		return nil
	}
	aside := tempName(asidePrefix + name)
	if err := unix.Renameat(dirfd, name, dirfd, aside); err != nil {
		return fmt.Errorf("move %s aside: %w", shown, err)
	}
	s.w.log.Warn("moved aside an entry dispenser did not create, a key needs its name", "key", key, "path", shown,
		"moved_to", path.Join(path.Dir(shown), aside))
	return nil
}

// replaceWithSymlink makes name in dirfd a symlink to target, atomically
// replacing a file or symlink already there.
func replaceWithSymlink(dirfd int, target, name string) error {
	tmp := tempName(tmpPrefix + "link")
	if err := unix.Symlinkat(target, dirfd, tmp); err != nil {
		return fmt.Errorf("create symlink %s: %w", name, err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		if t, lerr := readlinkAt(dirfd, tmp); lerr == nil && t == target {
			unix.Unlinkat(dirfd, tmp, 0)
		}
		return fmt.Errorf("create symlink %s: %w", name, err)
	}
	return nil
}

// removeFile removes a file the writer made, reporting whether it existed.
// It does nothing unless every parent is a real directory (a symlink there
// could lead into the current generation) and the entry is a non-directory
// owned by the writer or the configured owner.
func (s *state) removeFile(name string) (bool, error) {
	dir, base := split(name)
	pfd, err := s.top.open(dir)
	if err != nil {
		return false, nil
	}
	st, err := lstatAt(pfd, base)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", name, err)
	}
	if isDir(&st) || !s.w.ownedFile(&st) {
		return false, nil
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("remove %s: %w", name, err)
	}
	return true, nil
}

// removeEmptyDirs removes the given directories deepest first if they are
// empty real directories the writer owns, reached through real directories;
// rmdir never removes a file. It returns those that are gone, or are no
// longer directories (so no longer the writer's).
func (s *state) removeEmptyDirs(dirs []string) map[string]bool {
	sorted := append([]string(nil), dirs...)
	sortDeepestFirst(sorted)
	gone := make(map[string]bool)
	for _, d := range sorted {
		dir, base := split(d)
		pfd, err := s.top.open(dir)
		if err != nil { // not reachable through real directories: not the writer's any more
			gone[d] = errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)
			continue
		}
		st, err := lstatAt(pfd, base)
		switch {
		case errors.Is(err, unix.ENOENT) || err == nil && !isDir(&st):
			gone[d] = true
		case err == nil && int(st.Uid) == s.w.euid:
			s.top.forget(d)
			err = unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
			gone[d] = err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
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
// by a crashed run, if they are what the writer makes there: symlinks of
// its uid, files of its uid or of the configured owner.
func (s *state) removeReservedLeftovers(entries []os.DirEntry) {
	top := s.top.fds["."]
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, tmpPrefix) && n != dataTmpLink {
			continue
		}
		if st, err := lstatAt(top, n); err == nil && (isLink(&st) && int(st.Uid) == s.w.euid || isReg(&st) && s.w.ownedFile(&st)) {
			unix.Unlinkat(top, n, 0)
		}
	}
}

// removeOwn removes name in dirfd, a file or symlink, only if it has the
// writer's uid and one of the given types (S_IFREG, S_IFLNK): reserved
// names alone do not make an entry the writer's.
func (s *state) removeOwn(dirfd int, name string, types ...uint32) error {
	st, err := lstatAt(dirfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if int(st.Uid) != s.w.euid || !slices.Contains(types, st.Mode&unix.S_IFMT) {
		return nil
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// emptyTree removes everything in the directory open as fd, never
// following a symlink.
func emptyTree(fd int) error {
	entries, err := listDir(fd)
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() {
			if uerr := unix.Unlinkat(fd, n, 0); err == nil && uerr != nil && !errors.Is(uerr, unix.ENOENT) {
				err = uerr
			}
			continue
		}
		sub, oerr := openDir(fd, n)
		if oerr != nil {
			err = cmp.Or(err, oerr)
			continue
		}
		err = cmp.Or(err, emptyTree(sub))
		unix.Close(sub)
		if rerr := unix.Unlinkat(fd, n, unix.AT_REMOVEDIR); err == nil && rerr != nil && !errors.Is(rerr, unix.ENOENT) {
			err = rerr
		}
	}
	return err
}

func (s *state) readTop() ([]os.DirEntry, error) {
	entries, err := listDir(s.top.fds["."])
	if err != nil {
		return nil, fmt.Errorf("read target: %w", err)
	}
	return entries, nil
}
