package writer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
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
	// after a read or write and cleared by add and remove.
	clean bool
}

func (m *manifest) add(set map[string]bool, name string) {
	if !set[name] {
		set[name] = true
		m.clean = false
	}
}

func (m *manifest) remove(set map[string]bool, name string) {
	if set[name] {
		delete(set, name)
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
	return &manifest{Files: maps.Clone(m.Files), Dirs: maps.Clone(m.Dirs), clean: m.clean}
}

func (m *manifest) dirList() []string {
	return slices.Collect(maps.Keys(m.Dirs))
}

func (m *manifest) encode() string {
	j := manifestJSON{Version: 1, Files: slices.Sorted(maps.Keys(m.Files)), Dirs: slices.Sorted(maps.Keys(m.Dirs))}
	if j.Files == nil {
		j.Files = []string{}
	}
	if j.Dirs == nil {
		j.Dirs = []string{}
	}
	b, _ := json.Marshal(j) // cannot fail: strings only
	return string(b)
}

// readManifest reads the manifest, returning nil if there is none. A
// corrupt manifest is logged and treated as empty; entries that are not
// valid keys are dropped, so a tampered manifest cannot direct removals.
func (s *state) readManifest() (*manifest, error) {
	b, err := s.root.ReadFile(manifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
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

// saveManifest writes m atomically unless it is clean.
func (s *state) saveManifest(m *manifest) error {
	if m.clean {
		return nil
	}
	data := m.encode()
	tmp := tempName(tmpPrefix + "manifest")
	f, err := s.root.OpenFile(tmp, osCreateNew, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", manifestName, err)
	}
	_, err = f.Write([]byte(data))
	if err == nil && s.w.opts.Fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, manifestName)
	}
	if err != nil {
		s.root.Remove(tmp)
		return fmt.Errorf("write %s: %w", manifestName, err)
	}
	m.clean = true
	return s.syncDir(".")
}
