package writer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// manifest is the plain layout's record of the files and directories the
// writer created, so stale cleanup never touches anything else. On disk it
// is "..dispenser-manifest", JSON:
//
//	{"version":1,"files":["a","b/c"],"dirs":["b"]}
type manifest struct {
	Files map[string]bool
	Dirs  map[string]bool
	// clean means Files and Dirs equal the manifest on disk; it is set
	// after a read or write and cleared by a change.
	clean bool
	// sorted is Files in order once encode built it, then kept up to date
	// by addFile and dropFile, so that saving the manifest after one change
	// does not sort every name again.
	sorted []string
}

func (m *manifest) addFile(name string) {
	if m.Files[name] {
		return
	}
	m.Files[name], m.clean = true, false
	if m.sorted != nil {
		i, _ := slices.BinarySearch(m.sorted, name)
		m.sorted = slices.Insert(m.sorted, i, name)
	}
}

func (m *manifest) dropFile(name string) {
	if !m.Files[name] {
		return
	}
	delete(m.Files, name)
	m.clean = false
	if i, ok := slices.BinarySearch(m.sorted, name); ok {
		m.sorted = slices.Delete(m.sorted, i, i+1)
	}
}

func (m *manifest) addDir(name string) {
	if !m.Dirs[name] {
		m.Dirs[name], m.clean = true, false
	}
}

func (m *manifest) dropDir(name string) {
	if m.Dirs[name] {
		delete(m.Dirs, name)
		m.clean = false
	}
}

type manifestJSON struct {
	Version int      `json:"version"`
	Files   []string `json:"files"`
	Dirs    []string `json:"dirs"`
}

func newManifest() *manifest {
	return &manifest{Files: make(map[string]bool), Dirs: make(map[string]bool)}
}

func (m *manifest) clone() *manifest {
	return &manifest{Files: maps.Clone(m.Files), Dirs: maps.Clone(m.Dirs), clean: m.clean, sorted: slices.Clone(m.sorted)}
}

func (m *manifest) dirList() []string {
	return slices.Collect(maps.Keys(m.Dirs))
}

func (m *manifest) encode() string {
	if len(m.sorted) != len(m.Files) { // not built yet, or Files was filled directly
		m.sorted = slices.Sorted(maps.Keys(m.Files))
	}
	j := manifestJSON{Version: 1, Files: m.sorted, Dirs: slices.Sorted(maps.Keys(m.Dirs))}
	if j.Files == nil {
		j.Files = []string{}
	}
	if j.Dirs == nil {
		j.Dirs = []string{}
	}
	b, _ := json.Marshal(j) // cannot fail: strings only
	return string(b)
}

// maxManifest bounds the manifest the writer reads: far above what 10,000
// keys need, far below what could exhaust memory.
const maxManifest = 64 << 20

// readManifest reads the manifest, returning nil if there is none. The
// manifest is trusted only if it is a regular file the writer's uid owns,
// not writable by group or others, and at most maxManifest bytes; anything
// else (a file another user planted, a FIFO, a symlink) is logged, moved
// aside and treated as absent. It is opened with O_NOFOLLOW|O_NONBLOCK, so
// neither a symlink nor a FIFO can redirect or block the writer. A corrupt
// manifest is logged and treated as empty; entries that are not valid keys
// are dropped, so a tampered manifest cannot direct removals.
func (s *state) readManifest() (*manifest, error) {
	top := s.top.fds["."]
	fd, err := unix.Openat(top, manifestName, oRead, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if errors.Is(err, unix.ELOOP) {
		s.distrustManifest("it is a symlink")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", manifestName, err)
	}
	f := os.NewFile(uintptr(fd), manifestName)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", manifestName, err)
	}
	switch {
	case !isReg(&st):
		s.distrustManifest("it is not a regular file")
		return nil, nil
	case int(st.Uid) != s.w.euid:
		s.distrustManifest(fmt.Sprintf("it is owned by uid %d, not by dispenser (uid %d)", st.Uid, s.w.euid))
		return nil, nil
	case st.Mode&0o022 != 0:
		s.distrustManifest(fmt.Sprintf("its mode %o lets group or others write it", st.Mode&0o777))
		return nil, nil
	case st.Size > maxManifest:
		s.distrustManifest(fmt.Sprintf("it is larger than %d bytes", maxManifest))
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifest))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", manifestName, err)
	}
	m := newManifest()
	var j manifestJSON
	if err := json.Unmarshal(b, &j); err != nil {
		s.w.log.Warn("ignoring corrupt manifest; files it listed are no longer cleaned up", "path", manifestName, "err", err)
		return m, nil
	}
	for _, f := range j.Files {
		if ValidateKey(f) == nil {
			m.Files[f] = true
		}
	}
	for _, d := range j.Dirs {
		if ValidateKey(d) == nil {
			m.Dirs[d] = true
		}
	}
	m.clean = true
	return m, nil
}

// distrustManifest logs why the manifest is not trusted and moves it aside,
// so that it is neither used nor deleted.
func (s *state) distrustManifest(why string) {
	top := s.top.fds["."]
	aside := tempName(asidePrefix + manifestName)
	if err := unix.Renameat(top, manifestName, top, aside); err != nil {
		aside = "nowhere (" + err.Error() + ")"
	}
	s.w.log.Error(fmt.Sprintf("ignoring %s: %s; moved it to %s; files it lists are not cleaned up, check who else writes into the target",
		manifestName, why, aside), "path", manifestName)
}

// saveManifest writes m atomically unless it is clean.
func (s *state) saveManifest(m *manifest) error {
	if m.clean {
		return nil
	}
	top := s.top.fds["."]
	tmp := tempName(tmpPrefix + "manifest")
	fd, err := unix.Openat(top, tmp, oNew, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", manifestName, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	if err == nil {
		_, err = f.Write([]byte(m.encode()))
	}
	if err == nil && s.w.opts.Fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(top, tmp, top, manifestName)
	}
	if err != nil {
		removeSame(top, tmp, &st)
		return fmt.Errorf("write %s: %w", manifestName, err)
	}
	m.clean = true
	return s.syncDir(top, "target")
}
