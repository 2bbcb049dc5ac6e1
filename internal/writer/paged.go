package writer

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// paged is a Sync that arrives in pages ([Writer.SyncPage]). In the atomic
// layout each page goes to disk at once, into the next generation, and only
// the keys and digests stay in memory; the last page commits it. In the
// plain layout the pages are collected and the last one is a Sync.
type paged struct {
	s        *state
	cur      string            // the current generation, "" if none
	curFiles map[string]bool   // its files
	next     string            // the generation being built; "" while every file so far matches cur
	dirs     []string          // directories of next, to fsync
	same     []string          // keys whose file in cur matches, not yet linked into next
	keys     map[string][]byte // every key so far; nil once its file holds it
	sums     map[string]digest // digests of the placed keys (a file in next, or in same)
	lastKey  string
	full     map[string][]byte // plain layout: the pages so far
}

// errNoPaged is the error of a page that belongs to no paged sync: the
// first page was not seen, or the sync failed on an earlier page.
var errNoPaged = fmt.Errorf("page of a paged sync that failed or never started: %w", ErrResync)

// SyncPage is [Writer.Sync] for a state that arrives in pages, so that the
// whole state never has to be in memory. first starts a paged sync
// (discarding one under way: a snapshot that was read again from its
// start); last completes it, and the target then mirrors exactly the keys
// of all its pages, as after Sync. Keys must be in increasing byte order
// across all pages of one sync, each at most once; Delete must be false.
//
// In the atomic layout every page is written at once into the next
// generation, which only the last page commits with the rename over
// "..data" (no page is visible before: readers see the old state or the
// whole new one); if nothing differs, no generation is committed and
// Result.Changed is false. The writer keeps only the keys and a digest of
// each value, not the values: the caller may reuse a page's memory after
// the call. In the plain layout the pages are collected and the last one
// is written by Sync (which keeps the values until their files hold them).
//
// A page that is not the last returns an empty Result. An error abandons
// the paged sync and removes the half-built generation: the target is as
// before (atomic layout), and every later page up to the next first one
// fails with an error wrapping [ErrResync]. Sync and Apply also abandon a
// paged sync under way.
func (w *Writer) SyncPage(page []Change, first, last bool) (Result, error) {
	if first {
		w.abandonPaged()
		if err := w.startPaged(); err != nil {
			return Result{}, err
		}
	}
	p := w.paged
	if p == nil {
		return Result{}, errNoPaged
	}
	if p.full != nil {
		for _, c := range page {
			p.full[c.Key] = c.Value
		}
		if !last {
			return Result{}, nil
		}
		w.paged = nil
		return w.Sync(p.full)
	}
	if err := p.add(page); err != nil {
		w.abandonPaged()
		return Result{}, err
	}
	if !last {
		return Result{}, nil
	}
	w.paged = nil
	return w.commitPaged(p)
}

// startPaged opens the target and finds the current generation.
func (w *Writer) startPaged() error {
	w.trusted = false
	if w.opts.Layout == Plain {
		w.paged = &paged{full: make(map[string][]byte)}
		return nil
	}
	s := w.newState(nil, true)
	if err := w.openTarget(s); err != nil {
		return err
	}
	cur, err := s.currentGen()
	if err == nil && cur != "" {
		w.made[idOf(s.top.st[cur])] = true // Sync trusts a generation of the writer's uid
	}
	var files map[string]bool
	if err == nil {
		files, err = s.listGen(cur)
	}
	if err != nil {
		s.top.close()
		return err
	}
	w.paged = &paged{s: s, cur: cur, curFiles: files, keys: make(map[string][]byte), sums: make(map[string]digest)}
	return nil
}

// abandonPaged removes the generation a paged sync under way built.
func (w *Writer) abandonPaged() {
	p := w.paged
	w.paged = nil
	if p == nil || p.s == nil {
		return
	}
	if p.next != "" {
		p.s.removeGen(p.next)
	}
	p.s.top.close()
}

// add places the keys of one page: a key whose file in cur matches is
// linked (or remembered, while next does not exist yet), any other is
// written, several at a time. A key that turns out to be a directory of a
// later key (a conflict) loses its file again.
func (p *paged) add(page []Change) error {
	jobs := make([]job, 0, len(page)) // in key order
	for _, c := range page {
		k, v := c.Key, c.Value
		if v == nil {
			v = []byte{}
		}
		if _, seen := p.keys[k]; seen || (p.lastKey != "" && k < p.lastKey) || c.Delete {
			return fmt.Errorf("sync page: key %q out of order, repeated or a delete", k)
		}
		p.lastKey = k
		if ValidateKey(k) != nil {
			p.keys[k] = nil // never written: its content is never needed
			continue
		}
		p.keys[k] = v
		for _, d := range parents(k) {
			if i, ok := slices.BinarySearchFunc(jobs, d, func(j job, d string) int { return strings.Compare(j.key, d) }); ok && !jobs[i].skip {
				jobs[i].skip = true // not written yet: it never will be
				delete(p.sums, d)
				delete(p.s.wrote, d)
			} else if err := p.unplace(d); err != nil {
				return err
			}
		}
		if p.curFiles[k] && p.matchesCur(k, v) {
			if err := p.keep(k); err != nil {
				return err
			}
			p.sums[k] = sumOf(v)
			continue
		}
		fd, err := p.dirFor(k)
		if err != nil {
			return err
		}
		jobs = append(jobs, job{dirfd: fd, key: k, value: v})
		p.sums[k] = sumOf(v)
		p.s.wrote[k] = true
	}
	if err := p.s.writeFiles(p.next, jobs); err != nil {
		return err
	}
	for _, c := range page {
		if _, placed := p.sums[c.Key]; placed {
			p.keys[c.Key] = nil
		}
	}
	return nil
}

// matchesCur reports whether key's file in cur has content v.
func (p *paged) matchesCur(key string, v []byte) bool {
	dir, base := split(key)
	fd, err := p.s.top.open(path.Join(p.cur, dir))
	return err == nil && p.s.matches(fd, base, v)
}

// keep carries key's file over from cur: a hard link into next, or, while
// there is no next, a note to link it once there is.
func (p *paged) keep(key string) error {
	if p.next == "" {
		p.same = append(p.same, key)
		return nil
	}
	fd, err := p.dirFor(key)
	if err != nil {
		return err
	}
	dir, base := split(key)
	cfd, err := p.s.top.open(path.Join(p.cur, dir))
	if err != nil {
		return fmt.Errorf("read generation %s: %w", p.cur, err)
	}
	if err := unix.Linkat(cfd, base, fd, base, 0); err != nil {
		return fmt.Errorf("link %s into %s: %w", key, p.next, err)
	}
	return nil
}

// unplace takes back the file of key d, placed earlier, because a later
// key needs d as its directory: d's content is read back first, so that it
// can be written once the conflict is gone.
func (p *paged) unplace(d string) error {
	if _, placed := p.sums[d]; !placed {
		return nil
	}
	gen := p.next
	if i := slices.Index(p.same, d); i >= 0 {
		p.same = slices.Delete(p.same, i, i+1)
		gen = p.cur
	}
	dir, base := split(path.Join(gen, d))
	fd, err := p.s.top.open(dir)
	if err != nil {
		return fmt.Errorf("read generation %s: %w", gen, err)
	}
	v, err := readAt(fd, base, p.sums[d].n)
	if err != nil || sumOf(v) != p.sums[d] {
		return fmt.Errorf("read back %s: %w", d, errors.Join(err, ErrResync))
	}
	if gen == p.next {
		if err := unix.Unlinkat(fd, base, 0); err != nil {
			return fmt.Errorf("remove %s from %s: %w", d, gen, err)
		}
	}
	p.keys[d] = v
	delete(p.sums, d)
	delete(p.s.wrote, d)
	return nil
}

// dirFor returns the descriptor of key's directory in next, creating next
// and the directories as needed.
func (p *paged) dirFor(key string) (int, error) {
	if err := p.ensureNext(); err != nil {
		return -1, err
	}
	for _, d := range parents(key) {
		if g := p.next + "/" + d; !p.s.top.has(g) {
			if err := p.s.mkdir(p.s.top, g); err != nil {
				return -1, err
			}
			p.dirs = append(p.dirs, g)
		}
	}
	return p.s.top.fds[path.Join(p.next, path.Dir(key))], nil
}

// ensureNext creates the next generation, linking the files of cur that
// matched so far.
func (p *paged) ensureNext() error {
	if p.next != "" {
		return nil
	}
	next, err := p.s.newGenDir()
	if err != nil {
		return err
	}
	p.next, p.dirs = next, []string{next}
	same := p.same
	p.same = nil
	for _, k := range same {
		if err := p.keep(k); err != nil {
			return err
		}
	}
	return nil
}

// commitPaged completes a paged sync after its last page: if anything
// differs from cur, it commits next with one rename over ..data, then fixes
// the top-level symlinks and removes every other generation, as Sync does.
func (w *Writer) commitPaged(p *paged) (Result, error) {
	s := p.s
	defer s.top.close()
	w.index = buildIndex(p.keys)
	w.desired = p.keys
	w.retired = nil
	s.valid = slices.Sorted(maps.Keys(w.index.valid))
	changed := p.next != ""
	for f := range p.curFiles {
		if !w.index.valid[f] {
			changed = true
			if _, bad := w.bad[f]; !bad {
				s.res.Removed++
			}
		}
	}
	swapped, err := p.commit(changed)
	if !swapped {
		s.res, s.wrote = Result{}, map[string]bool{}
	}
	if err != nil {
		return w.finish(s, err)
	}
	w.disk = p.sums
	if err := s.topLevel(p.curFiles); err != nil {
		return w.finish(s, err)
	}
	s.removeOldGens(w.gen)
	return w.finish(s, nil)
}

// commit makes next current if changed: every directory of it synced, then
// the rename over ..data. Without a change the current generation stays.
// It reports whether ..data moved.
func (p *paged) commit(changed bool) (bool, error) {
	s, w := p.s, p.s.w
	if !changed {
		w.gen = p.cur
		return false, nil
	}
	err := p.ensureNext()
	for _, d := range p.dirs {
		if err == nil {
			err = s.syncDir(s.top.fds[d], d)
		}
	}
	if err == nil {
		err = s.swap(p.next)
	}
	if err != nil {
		if p.next != "" {
			s.removeGen(p.next)
		}
		return false, err
	}
	w.gen = p.next
	return true, s.syncDir(s.top.fds["."], "target")
}
