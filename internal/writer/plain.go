package writer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
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
//  5. write each file: temp file, chmod, chown, fsync, rename, fsync dir;
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
		if err := s.writePlain(k, m, prev, left); err != nil {
			return err
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
		if !w.trusted && s.realParents(k) && s.matches(k, w.desired[k]) {
			if !m.Files[k] {
				w.log.Info("adopting existing file with identical content", "key", k, "path", k)
				m.add(m.Files, k)
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
	if !s.realParents(dir + "/x") {
		return
	}
	f, err := s.root.Open(dir)
	if err != nil {
		return
	}
	entries, _ := f.ReadDir(-1)
	f.Close()
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) && !e.IsDir() {
			s.root.Remove(dir + "/" + e.Name())
		}
	}
}

// realParents reports whether every parent of key is a real directory.
func (s *state) realParents(key string) bool {
	for _, d := range parents(key) {
		if fi, err := s.root.Lstat(d); err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
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
			if fi, err := s.root.Lstat(d); err != nil || !fi.IsDir() {
				m.add(m.Dirs, d)
			}
		}
	}
	return s.saveManifest(m)
}

// writePlain replaces key's file in place.
func (s *state) writePlain(key string, m, prev *manifest, left *atomicLeftovers) error {
	if err := s.plainParents(key, left); err != nil {
		return err
	}
	fi, err := s.root.Lstat(key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("inspect %s: %w", key, err)
	case fi.IsDir():
		if err := s.clearUnmanaged(key, key, fi); err != nil {
			return err
		}
	case !prev.Files[key] && !left.isLink(key):
		s.w.log.Warn("replacing file dispenser did not create", "key", key, "path", key)
	}
	dir := path.Dir(key)
	tmp := path.Join(dir, tempName(tmpPrefix+path.Base(key)))
	if err := s.writeNew(tmp, s.w.desired[key]); err != nil {
		return err
	}
	if err := s.root.Rename(tmp, key); err != nil {
		s.root.Remove(tmp)
		return fmt.Errorf("write %s: %w", key, err)
	}
	s.res.Written++
	return s.syncDir(dir)
}

// plainParents makes every parent of key a real directory, creating missing
// ones and clearing anything else in the way.
func (s *state) plainParents(key string, left *atomicLeftovers) error {
	for _, d := range parents(key) {
		fi, err := s.root.Lstat(d)
		switch {
		case err == nil && fi.IsDir():
			continue
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("inspect %s: %w", d, err)
		case left.isLink(d):
			if err := s.root.Remove(d); err != nil {
				return fmt.Errorf("remove %s: %w", d, err)
			}
		default:
			if err := s.clearUnmanaged(key, d, fi); err != nil {
				return err
			}
		}
		if err := s.mkdir(d); err != nil {
			return err
		}
		if err := s.syncDir(path.Dir(d)); err != nil {
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
// generations, counting files no key keeps as removed.
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
	for _, e := range entries {
		n := e.Name()
		if n == dataLink && e.Type()&fs.ModeSymlink != 0 || isGenName(n) && e.IsDir() {
			if err := s.root.RemoveAll(n); err != nil {
				return fmt.Errorf("remove %s: %w", n, err)
			}
		}
	}
	return nil
}
