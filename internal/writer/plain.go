package writer

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// plain brings a plain-layout target up to date:
//
//  1. load the managed set: the manifest, or what the last call left;
//  2. decide which valid keys need writing (verifying the disk unless
//     trusted);
//  3. remove managed files no longer wanted and managed directories that
//     became empty;
//  4. record the files and directories about to be created in the manifest,
//     so a crash never leaves entries the next run does not know it owns;
//  5. write each file: temp file, chown, chmod, fsync, rename, fsync dir;
//     a key that cannot be written is marked unwritable and the others
//     still are;
//  6. remove what an atomic-layout run left (symlinks into ..data,
//     generations);
//  7. write the final manifest.
func (s *state) plain() error {
	w := s.w
	m, err := s.loadManaged() // (1)
	if err != nil {
		return err
	}
	prev := m.clone()
	var left *atomicLeftovers
	if !w.trusted {
		if left, err = s.findAtomicLeftovers(); err != nil {
			return err
		}
		for d := range m.Dirs {
			s.removeTemps(d)
		}
	}
	toWrite := s.plainPlan(m)                // (2)
	if err := s.removeStale(m); err != nil { // (3)
		return err
	}
	if err := s.recordIntent(m, toWrite); err != nil { // (4)
		return err
	}
	for _, k := range toWrite { // (5)
		err := s.writePlain(k, prev, left)
		if err != nil && isBatchErr(err) {
			return err
		}
		if err != nil {
			s.unwritable(k, unwritableDetail(err))
			if !prev.Files[k] {
				m.remove(m.Files, k)
			}
		}
	}
	if left != nil { // (6)
		if err := s.clearAtomicLeftovers(left); err != nil {
			return err
		}
	}
	if err := s.saveManifest(m); err != nil { // (7)
		return err
	}
	w.dirs = m.Dirs
	return nil
}

// loadManaged returns the managed set: from memory when trusted, else from
// the manifest on disk.
func (s *state) loadManaged() (*manifest, error) {
	w := s.w
	if w.trusted {
		m := newManifest()
		for k := range w.disk {
			m.Files[k] = true
		}
		for d := range w.dirs {
			m.Dirs[d] = true
		}
		m.clean = true
		return m, nil
	}
	m, err := s.readManifest()
	if m == nil && err == nil {
		m = newManifest()
	}
	return m, err
}

// plainPlan returns the valid keys whose file must be (re)written. Matching
// files not yet in the manifest are adopted.
func (s *state) plainPlan(m *manifest) []string {
	w := s.w
	var toWrite []string
	for _, k := range s.valid {
		if w.trusted && m.Files[k] && bytes.Equal(w.disk[k], w.desired[k]) {
			continue
		}
		if !w.trusted {
			if fd, err := s.parentOf(k); err == nil && s.matches(fd, path.Base(k), w.desired[k]) {
				if !m.Files[k] {
					w.log.Info("adopting existing file with identical content", "key", k, "path", k)
					m.add(m.Files, k)
				}
				continue
			}
		}
		toWrite = append(toWrite, k)
	}
	slices.Sort(toWrite) // write in a predictable order
	return toWrite
}

// removeTemps removes temp files a crashed run left in managed directory
// dir, so that it can be removed once empty.
func (s *state) removeTemps(dir string) {
	fd, err := s.parentOf(dir + "/x")
	if err != nil {
		return
	}
	entries, _ := listDir(fd)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) && !e.IsDir() {
			if st, err := lstatAt(fd, e.Name()); err == nil && s.w.ownedFile(&st) {
				unix.Unlinkat(fd, e.Name(), 0)
			}
		}
	}
}

// notOwnedError says that a directory below the target is not the writer's.
type notOwnedError struct {
	dir      string
	uid, own int
}

func (e *notOwnedError) Error() string {
	return fmt.Sprintf("directory %q is owned by uid %d, not by dispenser (uid %d); remove it or chown it to uid %d", e.dir, e.uid, e.own, e.own)
}

// parentOf returns the descriptor of key's directory if every directory on
// the way is real and, below the target, owned by the writer: a directory
// another user owns is theirs to swap names in (and its setgid bit would
// choose the group).
func (s *state) parentOf(key string) (int, error) {
	dir := path.Dir(key)
	fd, err := s.top.open(dir)
	if err != nil {
		return -1, err
	}
	for d := dir; d != "."; d = path.Dir(d) {
		if uid := int(s.top.st[d].Uid); uid != s.w.euid {
			return -1, &notOwnedError{dir: d, uid: uid, own: s.w.euid}
		}
	}
	return fd, nil
}

// removeStale removes managed files that are no longer valid keys, then
// managed directories no valid key needs, if empty.
func (s *state) removeStale(m *manifest) error {
	valid := make(map[string]bool, len(s.valid))
	need := make(map[string]bool)
	for _, k := range s.valid {
		valid[k] = true
		for _, d := range parents(k) {
			need[d] = true
		}
	}
	for f := range m.Files {
		if valid[f] {
			continue
		}
		existed, err := s.removeFile(f)
		if err != nil {
			return err
		}
		if existed {
			s.res.Removed++
		}
		m.remove(m.Files, f)
	}
	var unneeded []string
	for d := range m.Dirs {
		if !need[d] {
			unneeded = append(unneeded, d)
		}
	}
	for d := range s.removeEmptyDirs(unneeded) {
		m.remove(m.Dirs, d)
	}
	return nil
}

// recordIntent adds the files and missing directories of toWrite to m and
// saves it before anything is created.
func (s *state) recordIntent(m *manifest, toWrite []string) error {
	for _, k := range toWrite {
		m.add(m.Files, k)
		for _, d := range parents(k) {
			if m.Dirs[d] {
				continue
			}
			if _, err := s.top.open(d); err != nil {
				m.add(m.Dirs, d)
			}
		}
	}
	return s.saveManifest(m)
}

// writePlain replaces key's file in place, relative to the descriptor of
// its directory.
func (s *state) writePlain(key string, prev *manifest, left *atomicLeftovers) error {
	if err := s.plainParents(key, left); err != nil {
		return err
	}
	dir, base := split(key)
	pfd, err := s.parentOf(key)
	if err != nil {
		return err
	}
	st, err := lstatAt(pfd, base)
	switch {
	case errors.Is(err, unix.ENOENT):
	case err != nil:
		return fmt.Errorf("inspect %s: %w", key, err)
	case isDir(&st):
		s.top.forget(key)
		if err := s.clearUnmanaged(pfd, key, base, key, &st); err != nil {
			return err
		}
	case !prev.Files[key] && !left.isLink(key):
		s.w.log.Warn("replacing file dispenser did not create", "key", key, "path", key)
	}
	tmp := tempName(tmpPrefix + base)
	tst, err := s.writeNew(pfd, tmp, path.Join(dir, tmp), s.w.desired[key])
	if err != nil {
		return err
	}
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		removeSame(pfd, tmp, &tst)
		return fmt.Errorf("write %s: %w", key, err)
	}
	s.wrote[key] = true
	return s.syncDir(pfd, dir)
}

// plainParents makes every parent of key a real directory the writer owns,
// creating missing ones and clearing symlinks and files in the way.
func (s *state) plainParents(key string, left *atomicLeftovers) error {
	for _, d := range parents(key) {
		_, err := s.top.open(d)
		if err == nil {
			if uid := int(s.top.st[d].Uid); uid != s.w.euid {
				return &notOwnedError{dir: d, uid: uid, own: s.w.euid}
			}
			continue
		}
		pdir, base := split(d)
		pfd, perr := s.top.open(pdir)
		if perr != nil {
			return fmt.Errorf("open %s: %w", pdir, perr)
		}
		if !errors.Is(err, unix.ENOENT) {
			if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
				return fmt.Errorf("open %s: %w", d, err)
			}
			st, err := lstatAt(pfd, base)
			switch {
			case errors.Is(err, unix.ENOENT):
			case err != nil:
				return fmt.Errorf("inspect %s: %w", d, err)
			case isLink(&st) && left.isLink(d):
				if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("remove %s: %w", d, err)
				}
			default:
				if err := s.clearUnmanaged(pfd, key, base, d, &st); err != nil {
					return err
				}
			}
		}
		if err := s.mkdir(s.top, d); err != nil {
			return err
		}
		if err := s.syncDir(pfd, pdir); err != nil {
			return err
		}
	}
	return nil
}

// atomicLeftovers is what an atomic-layout run left in the target.
type atomicLeftovers struct {
	links map[string]bool // top-level symlinks into ..data
	files map[string]bool // files of the generation ..data points at
}

func (l *atomicLeftovers) isLink(name string) bool {
	return l != nil && l.links[name]
}

func (s *state) findAtomicLeftovers() (*atomicLeftovers, error) {
	gen, err := s.currentGen()
	if err != nil {
		return nil, err
	}
	files, err := s.listGen(gen)
	if err != nil {
		return nil, err
	}
	left := &atomicLeftovers{links: make(map[string]bool), files: files}
	if err := s.scanTop(left.links); err != nil {
		return nil, err
	}
	return left, nil
}

// clearAtomicLeftovers removes symlinks into ..data, ..data itself and all
// generations the writer owns, counting files no key keeps as removed.
func (s *state) clearAtomicLeftovers(left *atomicLeftovers) error {
	valid := make(map[string]bool, len(s.valid))
	for _, k := range s.valid {
		valid[k] = true
	}
	for f := range left.files {
		if !valid[f] {
			s.res.Removed++
		}
	}
	for name := range left.links {
		if err := s.removeOurLink(name); err != nil {
			return err
		}
	}
	entries, err := s.readTop()
	if err != nil {
		return err
	}
	top := s.top.fds["."]
	for _, e := range entries {
		n := e.Name()
		var err error
		switch {
		case n == dataLink:
			err = s.removeOwn(top, n, unix.S_IFLNK)
		case isGenName(n):
			err = s.removeGen(n)
		}
		if err != nil {
			return fmt.Errorf("remove %s: %w", n, err)
		}
	}
	return nil
}
