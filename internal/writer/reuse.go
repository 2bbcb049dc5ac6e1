package writer

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultReuseAfter is the default of Options.ReuseAfter.
const DefaultReuseAfter = time.Second

// retiredGen is the generation ..data pointed at before the current one,
// kept so that a later change set can reuse it instead of linking every
// file anew.
type retiredGen struct {
	name  string
	st    unix.Stat_t     // its directory when ..data moved away from it
	at    time.Time       // when ..data moved away from it
	lacks map[string]bool // keys whose file differs from the current generation's
}

// atomicDelta applies the keys in delta to an atomic-layout target the
// writer trusts. If a file changes it prepares the next generation (the
// retired one, renamed and brought up to date, or a fresh one), commits it
// with one rename over ..data and keeps the generation it replaced as the
// retired one. Then it fixes the top-level symlinks of the names delta and
// the unwritable keys touch.
func (s *state) atomicDelta(delta []string) error {
	w := s.w
	cur, err := s.currentGen()
	if err != nil {
		return err
	}
	if cur != w.gen || cur != "" && !w.made[idOf(s.top.st[cur])] {
		return errStale
	}
	for _, k := range delta {
		if _, bad := w.bad[k]; !w.index.valid[k] && hasKey(w.disk, k) && !bad {
			s.res.Removed++
		}
	}
	if len(delta) > 0 {
		old := w.retired
		next, reused, err := s.nextGen(cur, delta)
		if err != nil {
			s.res, s.wrote = Result{}, map[string]bool{}
			return err
		}
		if err := s.swap(next); err != nil {
			s.removeGen(next)
			s.res, s.wrote = Result{}, map[string]bool{}
			return err
		}
		if old != nil && !reused {
			w.stale = append(w.stale, old.name) // removed by Tidy, after the caller signalled
		}
		w.gen, w.retired = next, nil
		if cur != "" {
			lacks := make(map[string]bool, len(delta))
			for _, k := range delta {
				lacks[k] = true
			}
			w.retired = &retiredGen{name: cur, st: s.top.st[cur], at: w.now(), lacks: lacks}
		}
		if err := s.syncDir(s.top.fds["."], "target"); err != nil {
			return err
		}
	}
	return s.topLevelDelta(delta)
}

// nextGen returns the generation to commit next: the retired one if it may
// be reused, else a fresh one linking every unchanged file from cur.
func (s *state) nextGen(cur string, delta []string) (next string, reused bool, err error) {
	w := s.w
	if r := w.retired; r != nil && w.opts.ReuseAfter >= 0 && w.now().Sub(r.at) >= w.opts.ReuseAfter && w.opts.DirMode&0o022 == 0 {
		next, err := s.reuseGen(cur, r, delta)
		if err == nil {
			w.reuses++
			return next, true, nil
		}
		w.log.Debug("building a fresh generation", "reason", err)
	}
	s.valid = make([]string, 0, len(w.index.valid))
	keep := make(map[string]bool, len(w.index.valid))
	for k := range w.index.valid {
		s.valid = append(s.valid, k)
		keep[k] = true
	}
	for _, k := range delta {
		delete(keep, k)
	}
	next, err = s.buildGen(cur, keep)
	return next, false, err
}

// reuseGen makes the retired generation r the next one. It checks that the
// directory at r's name is still the very one the writer retired, unchanged
// (same inode, owner, mode, link count, change and modification times),
// renames it to a fresh generation name, so that no path naming it can see
// it change, checks the directory at the new name is the same inode, and
// then replaces the file of every key that changed since r was current (a
// link to cur's file) or changes now (a fresh file). Every such entry is
// replaced, never trusted. A directory found not to be r's is left where it
// is (moved back to r's name if the writer renamed it); on any other error
// the reused generation is removed. In both cases the caller builds a fresh
// generation.
func (s *state) reuseGen(cur string, r *retiredGen, delta []string) (string, error) {
	w := s.w
	w.retired = nil
	top := s.top.fds["."]
	st, err := lstatAt(top, r.name)
	if err != nil || !sameDir(&st, &r.st) || int(st.Uid) != w.euid || !w.made[idOf(st)] {
		return "", fmt.Errorf("retired generation %s is not as the writer left it", r.name)
	}
	name, err := s.renameGen(r.name)
	if err != nil {
		return "", err
	}
	if _, err := s.top.open(name); err != nil || idOf(s.top.st[name]) != idOf(r.st) {
		s.top.forget(name)
		if err := unix.Renameat2(top, name, top, r.name, unix.RENAME_NOREPLACE); err != nil {
			w.log.Error("cannot move back a directory swapped in for a retired generation", "path", name, "err", err)
		}
		return "", fmt.Errorf("retired generation %s was replaced while being reused", r.name)
	}
	if err := s.updateGen(name, cur, r, delta); err != nil {
		s.removeGen(name)
		w.reuseFailures++
		w.log.Warn("could not bring the retired generation up to date; building a fresh one", "err", err)
		return "", err
	}
	return name, nil
}

// sameDir reports whether st is still the directory was: same inode, type,
// mode, link count, modification and change time.
func sameDir(st, was *unix.Stat_t) bool {
	return isDir(st) && idOf(*st) == idOf(*was) && st.Mode == was.Mode && st.Nlink == was.Nlink &&
		st.Mtim == was.Mtim && st.Ctim == was.Ctim && st.Uid == was.Uid
}

// renameGen renames generation old to a fresh generation name, never over
// an existing entry.
func (s *state) renameGen(old string) (string, error) {
	top := s.top.fds["."]
	base := ".." + s.w.now().UTC().Format(genFormat)
	for i := 0; ; i++ {
		name := base
		if i > 0 {
			name += "_" + strconv.Itoa(i)
		}
		err := unix.Renameat2(top, old, top, name, unix.RENAME_NOREPLACE)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) || i == 100 {
			return "", fmt.Errorf("rename %s to %s: %w", old, name, err)
		}
	}
}

// updateGen brings generation gen, which held the files of generation r
// when r was current, up to date: first the files of keys no longer valid
// and the directories no key needs any more go, then every other key of
// r.lacks gets cur's file and every key of delta a fresh one.
func (s *state) updateGen(gen, cur string, r *retiredGen, delta []string) error {
	w := s.w
	keys := slices.Clone(delta)
	for k := range r.lacks {
		if !slices.Contains(delta, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	changed := map[string]bool{gen: true} // directories to fsync
	var unneeded []string
	for _, k := range keys {
		if w.index.valid[k] {
			continue
		}
		dir, base := split(k)
		fd, err := s.top.open(path.Join(gen, dir))
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue // never there, or a file its key replaced
		}
		if err != nil {
			return fmt.Errorf("update %s: %w", gen, err)
		}
		if err := unix.Unlinkat(fd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EISDIR) {
			return fmt.Errorf("update %s: remove %s: %w", gen, k, err)
		}
		changed[path.Join(gen, dir)] = true
		for _, d := range parents(k) {
			if w.index.under[d] == 0 {
				unneeded = append(unneeded, d)
			}
		}
	}
	slices.Sort(unneeded)
	unneeded = slices.Compact(unneeded)
	sortDeepestFirst(unneeded)
	for _, d := range unneeded {
		pdir, base := split(path.Join(gen, d))
		pfd, err := s.top.open(pdir)
		if err != nil {
			continue
		}
		s.top.forget(path.Join(gen, d))
		if err := unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("update %s: remove directory %s: %w", gen, d, err)
		}
		changed[pdir] = true
	}
	var jobs []job
	isDelta := make(map[string]bool, len(delta))
	for _, k := range delta {
		isDelta[k] = true
	}
	for _, k := range keys {
		if !w.index.valid[k] {
			continue
		}
		for _, d := range parents(k) {
			g := gen + "/" + d
			if _, err := s.top.open(g); errors.Is(err, unix.ENOENT) {
				if err := s.mkdir(s.top, g); err != nil {
					return err
				}
				changed[path.Dir(g)] = true
			} else if err != nil {
				return fmt.Errorf("update %s: %w", gen, err)
			}
		}
		dir, base := split(k)
		gfd, err := s.top.open(path.Join(gen, dir))
		if err != nil {
			return fmt.Errorf("update %s: %w", gen, err)
		}
		changed[path.Join(gen, dir)] = true
		if err := unix.Unlinkat(gfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("update %s: replace %s: %w", gen, k, err)
		}
		if !isDelta[k] {
			if cfd, err := s.top.open(path.Join(cur, dir)); err == nil && unix.Linkat(cfd, base, gfd, base, 0) == nil {
				continue
			}
		}
		v, err := s.value(k)
		if err != nil {
			return err
		}
		jobs = append(jobs, job{dirfd: gfd, key: k, value: v})
		if isDelta[k] {
			s.wrote[k] = true
		}
	}
	if err := s.writeFiles(gen, jobs); err != nil {
		return err
	}
	for d := range changed {
		if fd, ok := s.top.fds[d]; ok {
			if err := s.syncDir(fd, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// topLevelDelta makes the top-level symlinks of the names of delta and of
// the keys unwritable last time match the valid keys.
func (s *state) topLevelDelta(delta []string) error {
	w := s.w
	names := make(map[string]bool)
	for _, k := range delta {
		names[topName(k)] = true
	}
	for k := range w.bad {
		names[topName(k)] = true
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if w.index.tops[name] == 0 {
			if err := s.removeOurLink(name); err != nil {
				return err
			}
			continue
		}
		err := s.ensureLink(name, nil, false)
		switch {
		case err != nil && isBatchErr(err):
			return err
		case err != nil:
			for k := range w.index.valid {
				if topName(k) == name {
					s.unwritable(k, fmt.Sprintf("%v; dispenser needs %q to be a symlink it can replace: unmount or remove what is there", err, name))
				}
			}
		default:
			for k := range w.bad {
				if topName(k) == name && w.index.valid[k] {
					s.wrote[k] = true // visible for the first time
				}
			}
		}
	}
	return s.syncDir(s.top.fds["."], "target")
}
