package writer

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// genFormat names generation directories: ".." plus a UTC timestamp, so
// they sort by age and can never collide with a valid key.
const genFormat = "2006_01_02_15_04_05.000000000"

func isGenName(name string) bool {
	return len(name) > 2 && strings.HasPrefix(name, "..") && name[2] >= '0' && name[2] <= '9' && !strings.Contains(name, "/")
}

// atomic brings an atomic-layout target up to date, inspecting the disk
// (Sync, and the first call after an error):
//
//  1. find the current generation (..data) and its files;
//  2. decide per valid key whether its file can be carried over;
//  3. if the set or any content differs, build the next generation (hard
//     links for unchanged files, fresh files otherwise) and commit it with
//     one rename of a temporary symlink over ..data;
//  4. remove files a plain-layout run left (manifest), then add and remove
//     top-level symlinks "<name>" → "..data/<name>"; a name that cannot be
//     made a symlink makes its keys unwritable, not the batch fail;
//  5. remove every other generation.
//
// A failure before the commit leaves nothing visible, so the result then
// counts nothing. Between such runs, [state.atomicDelta] applies changes.
func (s *state) atomic() error {
	w := s.w
	cur, err := s.currentGen() // (1)
	if err != nil {
		return err
	}
	if s.full && cur != "" {
		w.made[idOf(s.top.st[cur])] = true // Sync trusts a generation of the writer's uid
	}
	old, err := s.listGen(cur)
	if err != nil {
		return err
	}
	keep, changed := s.plan(cur, old) // (2)
	next := cur
	if changed { // (3)
		if next, err = s.buildGen(cur, keep); err != nil {
			s.res, s.wrote = Result{}, map[string]bool{}
			return err
		}
		if err := s.swap(next); err != nil {
			s.removeGen(next)
			s.res, s.wrote = Result{}, map[string]bool{}
			return err
		}
		w.gen = next
		if err := s.syncDir(s.top.fds["."], "target"); err != nil {
			return err
		}
	}
	if err := s.topLevel(old); err != nil { // (4)
		return err
	}
	s.removeOldGens(next) // (5)
	w.gen = next
	return nil
}

// currentGen returns the generation ..data points at, or "" if there is
// none or it is not a directory the writer owns. A ..data that is not a
// symlink is moved aside.
func (s *state) currentGen() (string, error) {
	top := s.top.fds["."]
	st, err := lstatAt(top, dataLink)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", dataLink, err)
	}
	if !isLink(&st) {
		return "", s.clearUnmanaged(top, dataLink, dataLink, dataLink, &st)
	}
	gen, err := readlinkAt(top, dataLink)
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", dataLink, err)
	}
	if !isGenName(gen) {
		return "", nil
	}
	if _, err := s.top.open(gen); err != nil || int(s.top.st[gen].Uid) != s.w.euid {
		return "", nil
	}
	return gen, nil
}

// listGen returns the regular files in generation gen, walking it through
// descriptors.
func (s *state) listGen(gen string) (map[string]bool, error) {
	files := make(map[string]bool)
	if gen == "" {
		return files, nil
	}
	var walk func(rel string) error
	walk = func(rel string) error {
		fd, err := s.top.open(path.Join(gen, rel))
		if err != nil {
			return err
		}
		entries, err := listDir(fd)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := path.Join(rel, e.Name())
			if e.Type().IsRegular() {
				files[p] = true
			} else if e.IsDir() {
				if err := walk(p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, fmt.Errorf("read generation %s: %w", gen, err)
	}
	return files, nil
}

// plan returns the valid keys whose file in cur can be hard-linked into the
// next generation, and whether a next generation is needed at all. It counts
// files that will disappear in s.res.Removed (not those of keys that were
// unwritable, which readers never saw).
func (s *state) plan(cur string, old map[string]bool) (keep map[string]bool, changed bool) {
	w := s.w
	keep = make(map[string]bool, len(s.valid))
	for _, k := range s.valid {
		if old[k] && s.matchesIn(cur, k) {
			keep[k] = true
		} else {
			changed = true
		}
	}
	for k := range old {
		if !w.index.valid[k] {
			changed = true
			if _, bad := w.bad[k]; !bad {
				s.res.Removed++
			}
		}
	}
	return keep, changed
}

// matchesIn reports whether key's file in generation gen is up to date.
func (s *state) matchesIn(gen, key string) bool {
	dir, base := split(key)
	fd, err := s.top.open(path.Join(gen, dir))
	return err == nil && s.matchesKey(fd, base, key)
}

// buildGen creates the next generation directory holding every valid key.
// On error it removes what it built; the current generation is untouched.
func (s *state) buildGen(cur string, keep map[string]bool) (string, error) {
	gen, err := s.newGenDir()
	if err != nil {
		return "", err
	}
	if err := s.fillGen(gen, cur, keep); err != nil {
		s.removeGen(gen)
		return "", err
	}
	return gen, nil
}

// fillGen creates the files and directories of generation gen, each
// relative to the descriptor of its directory.
func (s *state) fillGen(gen, cur string, keep map[string]bool) error {
	dirs := []string{gen}
	var jobs []job
	for _, k := range s.valid {
		for _, d := range parents(k) {
			if g := gen + "/" + d; !s.top.has(g) {
				if err := s.mkdir(s.top, g); err != nil {
					return err
				}
				dirs = append(dirs, g)
			}
		}
		dir, base := split(k)
		gfd := s.top.fds[path.Join(gen, dir)]
		if keep[k] {
			if cfd, err := s.top.open(path.Join(cur, dir)); err == nil && unix.Linkat(cfd, base, gfd, base, 0) == nil {
				continue
			}
		}
		v, err := s.value(k)
		if err != nil {
			return err
		}
		jobs = append(jobs, job{dirfd: gfd, key: k, value: v})
		s.wrote[k] = true
	}
	if err := s.writeFiles(gen, jobs); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := s.syncDir(s.top.fds[d], d); err != nil {
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
		err := s.mkdir(s.top, name)
		if err == nil {
			s.w.made[idOf(s.top.st[name])] = true
		}
		if err == nil || !errors.Is(err, unix.EEXIST) || i == 100 {
			return name, err
		}
	}
}

// removeGen removes generation gen if the writer made it: this Writer
// created that very directory, or, during Sync, it is a directory of the
// writer's uid (a generation an earlier process left). A directory someone
// renamed onto a generation name is thus left alone, except by Sync.
func (s *state) removeGen(gen string) error {
	fd, err := s.top.open(gen)
	if err != nil {
		return nil
	}
	st := s.top.st[gen]
	id := idOf(st)
	if !s.w.made[id] && !(s.full && int(st.Uid) == s.w.euid) {
		return nil
	}
	err = emptyTree(fd)
	s.top.forget(gen)
	if err == nil {
		err = unix.Unlinkat(s.top.fds["."], gen, unix.AT_REMOVEDIR)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	delete(s.w.made, id)
	return nil
}

// swap points ..data at gen with one rename of a fresh temporary symlink,
// the commit point. On error ..data is unchanged. The temporary name is
// random, so nothing left at a fixed name can block the swap.
func (s *state) swap(gen string) error {
	top := s.top.fds["."]
	tmp := tempName(tmpPrefix + "data")
	if err := unix.Symlinkat(gen, top, tmp); err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := unix.Renameat(top, tmp, top, dataLink); err != nil {
		s.removeOwn(top, tmp, unix.S_IFLNK)
		return fmt.Errorf("switch %s to %s: %w", dataLink, gen, err)
	}
	return nil
}

// topLevel makes the top-level symlinks match the valid keys: it removes
// plain-layout leftovers, scans the whole target and checks every symlink.
func (s *state) topLevel(old map[string]bool) error {
	tops := s.w.index.tops // the top-level names of the valid keys
	had := make(map[string]bool)
	for k := range old {
		had[topName(k)] = true
	}
	m, err := s.clearPlainLeftovers(old)
	if err != nil {
		return err
	}
	if err := s.scanTop(had); err != nil {
		return err
	}
	failed := make(map[string]bool)
	for name := range tops {
		err := s.ensureLink(name, m, !had[name])
		switch {
		case err != nil && isBatchErr(err):
			return err
		case err != nil:
			failed[name] = true
			for _, k := range s.valid {
				if topName(k) == name {
					s.unwritable(k, fmt.Sprintf("%v; dispenser needs %q to be a symlink it can replace: unmount or remove what is there", err, name))
				}
			}
		}
	}
	for k := range s.w.bad {
		if s.w.index.valid[k] && !failed[topName(k)] {
			s.wrote[k] = true // visible for the first time
		}
	}
	for name := range had {
		if tops[name] == 0 {
			if err := s.removeOurLink(name); err != nil {
				return err
			}
		}
	}
	return s.syncDir(s.top.fds["."], "target")
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
			if t, err := readlinkAt(s.top.fds["."], n); err == nil && t == dataLink+"/"+n {
				had[n] = true
			}
		}
	}
	return nil
}

// ensureLink makes name a symlink to ..data/name. Something else in its place
// is replaced, with a warning unless it is a plain-layout leftover. fresh
// says that no symlink of the writer's was seen there, so creating it is
// tried first.
func (s *state) ensureLink(name string, m *manifest, fresh bool) error {
	top := s.top.fds["."]
	target := dataLink + "/" + name
	if fresh { // most likely nothing there: one call
		err := unix.Symlinkat(target, top, name)
		if err == nil {
			s.res.Changed = true
			return nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
	}
	st, err := lstatAt(top, name)
	switch {
	case errors.Is(err, unix.ENOENT):
		if err := unix.Symlinkat(target, top, name); err != nil {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
		s.res.Changed = true
		return nil
	case err != nil:
		return fmt.Errorf("inspect %s: %w", name, err)
	case isLink(&st):
		if t, err := readlinkAt(top, name); err == nil && t == target {
			return nil
		}
		s.w.log.Warn("replacing symlink dispenser did not create", "key", name, "path", name)
	case isDir(&st):
		s.top.forget(name)
		if err := s.clearUnmanaged(top, name, name, name, &st); err != nil {
			return err
		}
		if err := unix.Symlinkat(target, top, name); err != nil {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
		s.res.Changed = true
		return nil
	case m == nil || !m.Files[name]:
		s.w.log.Warn("replacing file dispenser did not create", "key", name, "path", name)
	}
	if err := replaceWithSymlink(top, target, name); err != nil {
		return err
	}
	s.res.Changed = true
	return nil
}

// removeOurLink removes name if it is a symlink into ..data.
func (s *state) removeOurLink(name string) error {
	top := s.top.fds["."]
	t, err := readlinkAt(top, name)
	if err != nil || t != dataLink+"/"+name {
		return nil
	}
	if err := unix.Unlinkat(top, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// removeOldGens removes every generation other than next that the writer
// owns. Failures are left for next time.
func (s *state) removeOldGens(next string) {
	entries, err := s.readTop()
	if err != nil {
		return
	}
	for _, e := range entries {
		if n := e.Name(); isGenName(n) && n != next && e.IsDir() {
			s.removeGen(n)
		}
	}
}

// clearPlainLeftovers removes what a plain-layout run recorded in its
// manifest, except top-level files a key replaces with a symlink (ensureLink
// does that atomically). Files no key keeps are counted as removed.
func (s *state) clearPlainLeftovers(old map[string]bool) (*manifest, error) {
	m, err := s.readManifest()
	if err != nil || m == nil {
		return nil, err
	}
	for f := range m.Files {
		if !strings.Contains(f, "/") && s.w.index.tops[f] > 0 {
			continue
		}
		existed, err := s.removeFile(f)
		if err != nil {
			return nil, err
		}
		if existed && !s.w.index.valid[f] && !old[f] {
			s.res.Removed++
		}
	}
	s.removeEmptyDirs(m.dirList())
	if err := s.removeOwn(s.top.fds["."], manifestName, unix.S_IFREG); err != nil {
		return nil, fmt.Errorf("remove %s: %w", manifestName, err)
	}
	return m, nil
}
