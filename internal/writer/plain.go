package writer

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// plain brings a plain-layout target up to date, inspecting the disk:
//
//  1. load the managed set from the manifest;
//  2. decide which valid keys need writing, comparing the files on disk;
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
	m, err := s.readManifest() // (1)
	if err != nil {
		return err
	}
	if m == nil {
		m = newManifest()
	}
	prev := m.clone()
	left, err := s.findAtomicLeftovers()
	if err != nil {
		return err
	}
	for d := range m.Dirs {
		s.removeTemps(d)
	}
	toWrite := s.plainPlan(m)                // (2)
	if err := s.removeStale(m); err != nil { // (3)
		return err
	}
	if err := s.writeAll(m, toWrite, prev.Files, left); err != nil { // (4, 5)
		return err
	}
	if err := s.clearAtomicLeftovers(left); err != nil { // (6)
		return err
	}
	if err := s.saveManifest(m); err != nil { // (7)
		return err
	}
	s.w.man = m
	return nil
}

// writeAll records toWrite in the manifest m, then writes each key; a key
// that cannot be written is marked unwritable and dropped from m unless
// known says it was there before.
func (s *state) writeAll(m *manifest, toWrite []string, known map[string]bool, left *atomicLeftovers) error {
	if err := s.recordIntent(m, toWrite); err != nil {
		return err
	}
	for _, k := range toWrite {
		err := s.writePlain(k, known[k], left)
		if err != nil && isBatchErr(err) {
			return err
		}
		if err != nil {
			s.unwritable(k, unwritableDetail(err))
			if !known[k] {
				m.dropFile(k)
			}
		}
	}
	return nil
}

// plainDelta applies the keys in delta to a plain-layout target the writer
// trusts: it removes the files of keys no longer valid and the managed
// directories they leave unneeded, then writes the others and retries the
// keys unwritable last time. Only a key added or removed rewrites the
// manifest.
func (s *state) plainDelta(delta []string) error {
	w := s.w
	m := w.man
	if m == nil || !m.clean {
		return errStale
	}
	var toWrite, unneeded []string
	known := make(map[string]bool)
	for _, k := range delta {
		if w.index.valid[k] {
			toWrite = append(toWrite, k)
			known[k] = m.Files[k]
			continue
		}
		if !m.Files[k] {
			continue
		}
		existed, err := s.removeFile(k)
		if err != nil {
			return err
		}
		if existed {
			s.res.Removed++
		}
		m.dropFile(k)
		for _, d := range parents(k) {
			if w.index.under[d] == 0 && m.Dirs[d] {
				unneeded = append(unneeded, d)
			}
		}
	}
	for d := range s.removeEmptyDirs(unneeded) {
		m.dropDir(d)
	}
	for k := range w.bad {
		if w.index.valid[k] && !slices.Contains(toWrite, k) {
			toWrite = append(toWrite, k)
			known[k] = m.Files[k]
		}
	}
	slices.Sort(toWrite)
	if err := s.writeAll(m, toWrite, known, nil); err != nil {
		return err
	}
	return s.saveManifest(m)
}

// plainPlan returns the valid keys whose file must be (re)written. Matching
// files not yet in the manifest are adopted.
func (s *state) plainPlan(m *manifest) []string {
	w := s.w
	var toWrite []string
	for _, k := range s.valid {
		if fd, err := s.parentOf(k); err == nil && s.matchesKey(fd, path.Base(k), k) {
			if !m.Files[k] {
				w.log.Info("adopting existing file with identical content", "key", k, "path", k)
				m.addFile(k)
			}
			continue
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
		m.dropFile(f)
	}
	var unneeded []string
	for d := range m.Dirs {
		if !need[d] {
			unneeded = append(unneeded, d)
		}
	}
	for d := range s.removeEmptyDirs(unneeded) {
		m.dropDir(d)
	}
	return nil
}

// recordIntent adds the files and missing directories of toWrite to m and
// saves it before anything is created.
func (s *state) recordIntent(m *manifest, toWrite []string) error {
	for _, k := range toWrite {
		m.addFile(k)
		for _, d := range parents(k) {
			if m.Dirs[d] {
				continue
			}
			if _, err := s.top.open(d); err != nil {
				m.addDir(d)
			}
		}
	}
	return s.saveManifest(m)
}

// writePlain replaces key's file in place, relative to the descriptor of
// its directory.
func (s *state) writePlain(key string, known bool, left *atomicLeftovers) error {
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
	case !known && !left.isLink(key):
		s.w.log.Warn("replacing file dispenser did not create", "key", key, "path", key)
	}
	v, err := s.value(key)
	if err != nil {
		return err
	}
	tmp := tempName(tmpPrefix + base)
	var tst unix.Stat_t
	if err := s.writeNew(pfd, tmp, path.Join(dir, tmp), v, false, &tst); err != nil {
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
