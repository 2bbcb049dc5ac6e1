package writer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// genFormat names generation directories: ".." plus a UTC timestamp, so
// they sort by age and can never collide with a valid key.
const genFormat = "2006_01_02_15_04_05.000000000"

func isGenName(name string) bool {
	return len(name) > 2 && strings.HasPrefix(name, "..") && name[2] >= '0' && name[2] <= '9' && !strings.Contains(name, "/")
}

// atomic brings an atomic-layout target up to date:
//
//  1. find the current generation (..data) and its files;
//  2. decide per valid key whether its file can be carried over;
//  3. if the set or any content differs, build the next generation (hard
//     links for unchanged files, fresh files otherwise) and commit it with
//     one rename of ..data_tmp over ..data;
//  4. remove files a plain-layout run left (manifest), then add and remove
//     top-level symlinks "<name>" → "..data/<name>";
//  5. remove old generations.
func (s *state) atomic() error {
	w := s.w
	cur, err := s.currentGen() // (1)
	if err != nil {
		return err
	}
	trusted := w.trusted && cur != "" && cur == w.gen
	var old map[string]bool
	if trusted {
		old = make(map[string]bool, len(w.disk))
		for k := range w.disk {
			old[k] = true
		}
	} else if old, err = s.listGen(cur); err != nil {
		return err
	}
	keep, changed := s.plan(cur, old, trusted) // (2)
	next := cur
	if changed { // (3)
		if next, err = s.buildGen(cur, keep); err != nil {
			return err
		}
		if err := s.swap(next); err != nil {
			s.root.RemoveAll(next)
			return err
		}
		w.gen = next
		if err := s.syncDir("."); err != nil {
			return err
		}
	}
	if err := s.topLevel(old, trusted); err != nil { // (4)
		return err
	}
	s.removeOldGens(cur, next, trusted) // (5)
	return nil
}

// currentGen returns the generation ..data points at, or "" if there is
// none. A ..data that is not a symlink is moved aside.
func (s *state) currentGen() (string, error) {
	fi, err := s.root.Lstat(dataLink)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", dataLink, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", s.clearUnmanaged(dataLink, dataLink, fi)
	}
	gen, err := s.root.Readlink(dataLink)
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", dataLink, err)
	}
	if !isGenName(gen) {
		return "", nil
	}
	if fi, err := s.root.Lstat(gen); err != nil || !fi.IsDir() {
		return "", nil
	}
	return gen, nil
}

// listGen returns the regular files in generation gen.
func (s *state) listGen(gen string) (map[string]bool, error) {
	files := make(map[string]bool)
	if gen == "" {
		return files, nil
	}
	sub, err := s.root.OpenRoot(gen)
	if err != nil {
		return nil, fmt.Errorf("read generation %s: %w", gen, err)
	}
	defer sub.Close()
	err = fs.WalkDir(sub.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files[p] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read generation %s: %w", gen, err)
	}
	return files, nil
}

// plan returns the valid keys whose file in cur can be hard-linked into the
// next generation, and whether a next generation is needed at all. It counts
// files that will disappear in s.res.Removed.
func (s *state) plan(cur string, old map[string]bool, trusted bool) (keep map[string]bool, changed bool) {
	w := s.w
	keep = make(map[string]bool, len(s.valid))
	for _, k := range s.valid {
		if !old[k] {
			changed = true
			continue
		}
		if trusted && bytes.Equal(w.disk[k], w.desired[k]) ||
			!trusted && s.matches(cur+"/"+k, w.desired[k]) {
			keep[k] = true
		} else {
			changed = true
		}
	}
	valid := make(map[string]bool, len(s.valid))
	for _, k := range s.valid {
		valid[k] = true
	}
	for k := range old {
		if !valid[k] {
			changed = true
			s.res.Removed++
		}
	}
	return keep, changed
}

// buildGen creates the next generation directory holding every valid key.
// On error it removes what it built; the current generation is untouched.
func (s *state) buildGen(cur string, keep map[string]bool) (string, error) {
	gen, err := s.newGenDir()
	if err != nil {
		return "", err
	}
	if err := s.fillGen(gen, cur, keep); err != nil {
		s.root.RemoveAll(gen)
		return "", err
	}
	return gen, nil
}

// fillGen creates the files and directories of generation gen.
func (s *state) fillGen(gen, cur string, keep map[string]bool) error {
	dirs := []string{gen}
	made := make(map[string]bool)
	for _, k := range s.valid {
		for _, d := range parents(k) {
			if !made[d] {
				if err := s.mkdir(gen + "/" + d); err != nil {
					return err
				}
				made[d] = true
				dirs = append(dirs, gen+"/"+d)
			}
		}
		if keep[k] && s.root.Link(cur+"/"+k, gen+"/"+k) == nil {
			continue
		}
		if err := s.writeNew(gen+"/"+k, s.w.desired[k]); err != nil {
			return err
		}
		s.res.Written++
	}
	for _, d := range dirs {
		if err := s.syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

func (s *state) newGenDir() (string, error) {
	base := ".." + time.Now().UTC().Format(genFormat)
	for i := 0; ; i++ {
		name := base
		if i > 0 {
			name += "_" + strconv.Itoa(i)
		}
		err := s.mkdir(name)
		if err == nil || !errors.Is(err, fs.ErrExist) || i == 100 {
			return name, err
		}
	}
}

// swap points ..data at gen with one rename, the commit point. On error
// ..data is unchanged.
func (s *state) swap(gen string) error {
	if err := s.root.Remove(dataTmpLink); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dataTmpLink, err)
	}
	if err := s.root.Symlink(gen, dataTmpLink); err != nil {
		return fmt.Errorf("create %s: %w", dataTmpLink, err)
	}
	if err := s.root.Rename(dataTmpLink, dataLink); err != nil {
		s.root.Remove(dataTmpLink)
		return fmt.Errorf("switch %s to %s: %w", dataLink, gen, err)
	}
	return nil
}

// topLevel makes the top-level symlinks match the valid keys. When trusted,
// only names that appeared or vanished since the last call are touched;
// otherwise the whole target is scanned, plain-layout leftovers are removed
// and every symlink is checked.
func (s *state) topLevel(old map[string]bool, trusted bool) error {
	want := make(map[string]bool)
	for _, k := range s.valid {
		want[topName(k)] = true
	}
	had := make(map[string]bool)
	for k := range old {
		had[topName(k)] = true
	}
	var m *manifest
	if !trusted {
		var err error
		if m, err = s.clearPlainLeftovers(want, old); err != nil {
			return err
		}
		if err := s.scanTop(had); err != nil {
			return err
		}
	}
	for name := range want {
		if trusted && had[name] {
			continue
		}
		if err := s.ensureLink(name, m); err != nil {
			return err
		}
	}
	for name := range had {
		if !want[name] {
			if err := s.removeOurLink(name); err != nil {
				return err
			}
		}
	}
	return s.syncDir(".")
}

// scanTop adds to had every top-level symlink into ..data, so stale ones an
// earlier process left are removed too.
func (s *state) scanTop(had map[string]bool) error {
	entries, err := s.readTop()
	if err != nil {
		return err
	}
	s.removeReservedLeftovers(entries)
	for _, e := range entries {
		if n := e.Name(); e.Type()&fs.ModeSymlink != 0 && !strings.HasPrefix(n, "..") {
			if t, err := s.root.Readlink(n); err == nil && t == dataLink+"/"+n {
				had[n] = true
			}
		}
	}
	return nil
}

// ensureLink makes name a symlink to ..data/name. Something else in its place
// is replaced, with a warning unless it is a plain-layout leftover.
func (s *state) ensureLink(name string, m *manifest) error {
	target := dataLink + "/" + name
	fi, err := s.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := s.root.Symlink(target, name); err != nil {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
		s.res.Changed = true
		return nil
	case err != nil:
		return fmt.Errorf("inspect %s: %w", name, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		if t, err := s.root.Readlink(name); err == nil && t == target {
			return nil
		}
		s.w.log.Warn("replacing symlink dispenser did not create", "key", name, "path", name)
	case fi.IsDir():
		if err := s.clearUnmanaged(name, name, fi); err != nil {
			return err
		}
		if err := s.root.Symlink(target, name); err != nil {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
		s.res.Changed = true
		return nil
	case m == nil || !m.Files[name]:
		s.w.log.Warn("replacing file dispenser did not create", "key", name, "path", name)
	}
	s.res.Changed = true
	return s.replaceWithSymlink(target, name)
}

// removeOurLink removes name if it is a symlink into ..data.
func (s *state) removeOurLink(name string) error {
	t, err := s.root.Readlink(name)
	if err != nil || t != dataLink+"/"+name {
		return nil
	}
	if err := s.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// removeOldGens removes generations other than next: just the previous one
// when trusted, every one found otherwise. Failures are left for next time.
func (s *state) removeOldGens(cur, next string, trusted bool) {
	if trusted {
		if cur != "" && cur != next {
			s.root.RemoveAll(cur)
		}
		return
	}
	entries, err := s.readTop()
	if err != nil {
		return
	}
	for _, e := range entries {
		if n := e.Name(); isGenName(n) && n != next && e.IsDir() {
			s.root.RemoveAll(n)
		}
	}
}

// clearPlainLeftovers removes what a plain-layout run recorded in its
// manifest, except top-level files a key replaces with a symlink (ensureLink
// does that atomically). Files no key keeps are counted as removed.
func (s *state) clearPlainLeftovers(want, old map[string]bool) (*manifest, error) {
	m, err := s.readManifest()
	if err != nil || m == nil {
		return nil, err
	}
	valid := make(map[string]bool, len(s.valid))
	for _, k := range s.valid {
		valid[k] = true
	}
	for f := range m.Files {
		if !strings.Contains(f, "/") && want[f] {
			continue
		}
		existed, err := s.removeFile(f)
		if err != nil {
			return nil, err
		}
		if existed && !valid[f] && !old[f] {
			s.res.Removed++
		}
	}
	s.removeEmptyDirs(m.dirList())
	if err := s.root.Remove(manifestName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove %s: %w", manifestName, err)
	}
	return m, nil
}
