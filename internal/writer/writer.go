// Package writer mirrors a set of key/value pairs as files under one target
// directory: each key is a relative path ("tls.crt", "nginx/site.conf"),
// each value the file's content. Keys with "/" become subdirectories.
//
// # Layouts
//
// [Atomic] (the default) keeps the files in a hidden generation directory
// "..<timestamp>" and points the relative symlink "..data" at it; every
// top-level name is a symlink "<name>" → "..data/<name>". A change set
// prepares the next generation, commits it with one rename of a temporary
// symlink over "..data", then adds and removes top-level symlinks. The
// generation it replaced is kept as the retired one, and the next change
// set uses it:
//
//   - if "..data" moved away from it at least Options.ReuseAfter ago
//     (default [DefaultReuseAfter], 1 s), the retired generation is renamed
//     to a fresh generation name, then only the files of the keys that
//     changed since it was current are replaced (by a hard link to the
//     current file, or a new file): the change set costs what changed, not
//     what the target holds;
//   - otherwise a fresh generation is built, every unchanged file a hard
//     link to the current one, and the retired generation is removed by
//     [Writer.Tidy] (which the caller calls after signalling, else the
//     next Apply first).
//
// [Writer.Sync] always builds a fresh generation when anything differs, and
// removes every other.
//
// [Plain] replaces each file in place (temp file, chmod, chown, fsync,
// rename, fsync of the directory) and records the files and directories it
// created in "..dispenser-manifest" (JSON). Readers may see a batch half
// applied.
//
// # Cost of a change
//
// Sync reads the whole target. Between Syncs, Apply trusts its memory of
// what it wrote and looks only at the keys a batch changes, the keys whose
// validity they change (a file where another key needs a directory), and
// keys unwritable last time. In the atomic layout a batch then costs what
// it changes when the retired generation is reused, and a link per file
// when a fresh generation is built (batches closer together than
// Options.ReuseAfter). In the plain layout it costs what it changes; adding
// or removing a key also rewrites the manifest, which lists every file.
//
// # Memory
//
// Once a file is written the writer keeps only its key and a digest of its
// content (length and a 64-bit hash with a per-process seed), not the
// content. If it must write such a file again (the disk is not as it left
// it) it reads the content back from the file it wrote and checks it
// against the digest; if that file is damaged too the call fails with an
// error wrapping [ErrResync], and the caller syncs the whole state again.
// [Writer.SyncPage] takes a snapshot in pages and, in the atomic layout,
// writes each page into the next generation at once, so that the values of
// the whole state are never in memory together.
//
// # Readers of the atomic layout
//
// What a reader is promised:
//
//   - A file, once in a generation, is never written again: an open file
//     keeps its content. Files are replaced by new files, never changed.
//   - Every change set is one rename over "..data". A path resolved through
//     "..data" or a top-level symlink after it names files of the new set;
//     one resolved before it names files of the old set.
//   - A reader that resolves "..data" once and reads several files relative
//     to the generation it found (it opens "..data" as a directory, as
//     [os.OpenRoot] does, or reads the link and opens "..<gen>/a" by name)
//     gets files of that one change set only, or sees them vanish because
//     the generation was removed, as long as it finishes within
//     Options.ReuseAfter of the moment "..data" moved away from that
//     generation. After that the generation may be reused for a later
//     change set.
//   - A generation is renamed to a new timestamped name before it is
//     reused: opening "..<gen>/a" by its old name after that fails (ENOENT),
//     it never yields a file of a later change set. Only a reader holding
//     the directory open, or a path lookup under way at the instant of the
//     rename, can see it change.
//
// A reader that needs a consistent set for longer than Options.ReuseAfter
// resolves "..data" again, or copies the files.
//
// # What the writer owns
//
// Every name the writer uses for itself starts with "..", which no valid key
// may contain as a segment. It owns: "..data", generations, top-level
// symlinks into "..data" (atomic), and what the manifest lists (plain).
// Files it did not create are never deleted. An entry it did not create that
// stands where a key must go is replaced if it is a file or symlink (a
// warning is logged, as the original dispenser overwrote such files) and
// renamed aside to "..displaced-<name>-<random>" if it is a directory, so its
// content survives. In the plain layout nested keys may share an existing
// directory with the user's files; in the atomic layout each top-level name
// is the writer's.
//
// # Safety
//
// Keys are validated before touching the disk ([ValidateKey]); rejected keys
// are skipped, logged once and listed in [Result.Rejected], and never block
// other keys. A valid key whose file cannot be written (a directory in the
// way that cannot be moved aside, such as a mount point; in the plain layout
// a parent directory the writer does not own, or an I/O error on its file)
// is treated the same way, with reason [ReasonUnwritable], and retried on
// every later call. Only failures of the whole batch return an error: the
// target cannot be opened, the disk is full or read-only (ENOSPC, EDQUOT,
// EFBIG, EROFS) or ..data cannot be switched.
//
// # Threat model
//
// The writer may run as root (to give files to another owner with a mode
// that keeps them private) while a less-privileged local user can write
// into the target directory. Such a user must never read a file they are
// not given, redirect a chmod or chown, or make the writer delete something
// it did not create. Any name in the target can be swapped between two
// system calls (renameat2 with RENAME_EXCHANGE is one call), so:
//
//   - the target is opened once; every directory below it is opened once,
//     relative to its parent, with O_DIRECTORY|O_NOFOLLOW, and everything
//     inside it is done relative to that descriptor with the *at calls and
//     no-follow flags: no name is resolved twice and no symlink is followed;
//   - a directory the writer creates is opened once and checked to be the
//     one it made (a directory of its own uid, private, empty) before chown
//     and chmod on the descriptor; files get chown then chmod on the
//     descriptor, and always an explicit group (Options.GID, else the
//     writer's own gid), so a setgid parent cannot choose it;
//   - in the plain layout a key is written only into directories below the
//     target that the writer's uid owns; others make the key unwritable;
//   - the manifest is trusted only if it is a regular file of the writer's
//     uid, not writable by group or others, of bounded size; reserved ".."
//     names are removed only if they have the writer's uid and the type the
//     writer makes there; a generation only if this Writer created that
//     very directory, or, during Sync, if it is a directory of the writer's
//     uid; managed files only if they have the configured owner's uid (the
//     writer's without one), and directories only while they are empty real
//     directories reached through real directories.
//   - a retired generation is reused only if the directory at its name is
//     the very one this Writer made and retired, with the owner, mode, link
//     count, modification and change times it had then (so nobody added,
//     removed or renamed an entry at its top), and only if Options.DirMode
//     lets neither group nor others write into it; after the rename it must
//     still be that inode, else what was renamed is moved back and left
//     alone. Every file of a key that changed since it was current is
//     replaced, never trusted; the other files are hard links to the
//     inodes of the current generation, which Apply trusts in the same way
//     (damage to them is repaired by the next Sync).
//
// What it does not defend against: such a user can still delete or rename
// entries in the target (unless it has the sticky bit), and so change what
// readers see at the names they can write; a root-owned entry renamed by
// them onto a reserved name is indistinguishable from the writer's own, so
// the next Sync may remove it.
//
// # Start-up and layout changes
//
// The first call on a new Writer, and every [Writer.Sync], inspects the disk:
// it compares files byte for byte, corrects modes and owners, and removes
// what an earlier process left (stale symlinks and generations, manifest
// entries no key wants, temp files). It also converts a target written in the
// other layout: switching to plain removes "..data", the generations and the
// symlinks; switching to atomic removes the manifest's files and empty
// directories and turns top-level files into symlinks. During the switch a
// file may be briefly missing.
//
// The package does not talk to etcd, signal processes or retry on its own:
// the caller strips the etcd prefix, feeds Sync and [Writer.Apply], signals
// its child when [Result.Changed] is set, and calls again after an error
// (the writer keeps the desired state).
package writer

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Layout selects how files are arranged in the target directory.
type Layout int

const (
	// Atomic keeps files in a generation directory behind a "..data" symlink.
	Atomic Layout = iota
	// Plain writes each file directly at its path, one rename per file.
	Plain
)

// ParseLayout parses "atomic" or "plain".
func ParseLayout(s string) (Layout, error) {
	switch s {
	case "atomic":
		return Atomic, nil
	case "plain":
		return Plain, nil
	}
	return 0, fmt.Errorf("unknown layout %q; use \"atomic\" or \"plain\"", s)
}

func (l Layout) String() string {
	if l == Plain {
		return "plain"
	}
	return "atomic"
}

// ErrChownNotPermitted is wrapped by the error [New] returns when Options.UID
// or Options.GID is set but the process may not give files away (normally
// because it is not root). The caller adds the name of its flag.
var ErrChownNotPermitted = errors.New("changing the owner of files requires root")

// Options configure a [Writer]. The zero value of each field is documented.
type Options struct {
	// Dir is the target directory. New creates it (mode 0755) if missing.
	// Required.
	Dir string
	// Layout defaults to Atomic.
	Layout Layout
	// FileMode is the permission of every file, applied with chmod so the
	// umask does not matter. Zero means 0600. Only the bits 0777 are allowed.
	FileMode fs.FileMode
	// DirMode is the permission of directories the writer creates (nested
	// keys, generation directories), applied with chmod. Zero means 0755.
	// Directories keep the process's owner.
	DirMode fs.FileMode
	// UID and GID are the owner given to every file; UID -1 leaves the
	// owner the process creates files with, GID -1 gives files and
	// directories the process's own gid (set explicitly, so a setgid
	// parent cannot choose it); an existing file's group is then not
	// corrected. Beware: the zero value 0 means root, so callers that do
	// not want a chown must pass -1 explicitly.
	UID, GID int
	// Fsync makes the writer fsync every written file and the directories it
	// changes before reporting success. False skips fsync (faster; a crash
	// may then leave torn files, which the next Sync repairs).
	Fsync bool
	// Logger receives warnings about rejected keys and replaced files. Nil
	// discards them.
	Logger *slog.Logger
	// ReuseAfter is how long a generation stays untouched after "..data"
	// moved away from it; after that the atomic layout may reuse it for a
	// later change set (see "Readers of the atomic layout" in the package
	// documentation). Zero means [DefaultReuseAfter]; a negative value
	// never reuses a generation, so that every change set links every
	// unchanged file anew.
	ReuseAfter time.Duration
	// KeyPrefix is put before keys in log lines, so that they name the key
	// as the operator knows it (the etcd prefix, e.g. "/certs/"). Empty
	// logs keys as given.
	KeyPrefix string
}

// Change is one key update: Value is the new content unless Delete is set.
type Change struct {
	Key    string
	Value  []byte
	Delete bool
}

// Result describes what a Sync or Apply did. With an error it describes
// what was done before the failure.
type Result struct {
	// Changed is true iff a file's content, mode or owner changed, a file
	// appeared or a file was removed: the caller should signal its child.
	// A call that fails may already have changed files (plain layout, or
	// a failure after the atomic switch); the next successful call then
	// reports Changed even if it has nothing left to do.
	Changed bool
	// Written counts files (re)written that readers can now see. Files
	// carried over unchanged from the previous generation, files of a
	// generation that was not committed and files of unwritable keys are
	// not counted.
	Written int
	// Removed counts files removed that readers could see.
	Removed int
	// Rejected lists every key of the whole desired state that is currently
	// rejected, sorted by key, not just those of this call, including valid
	// keys that could not be written ([ReasonUnwritable]). A warning is
	// logged only the first time a key is rejected.
	Rejected []Rejection
}

// Writer applies key/value state to a directory. Its methods must be called
// from one goroutine at a time; it does no locking of its own, and nothing
// else may write the managed files of its target concurrently.
type Writer struct {
	opts       Options
	log        *slog.Logger
	euid, egid int // the writer's own ids: what it creates is theirs

	desired map[string][]byte    // full desired state, including rejected keys; nil once the file holds it (then see disk)
	index   *keyIndex            // validity of the desired keys
	warned  map[string]bool      // rejected keys already logged
	bad     map[string]Rejection // valid keys found unwritable by the last call

	// disk is what the last successful call left on disk, keyed by path;
	// trusted is false after an error, before the first call and during
	// Sync, when the disk is inspected instead of trusting disk.
	disk    map[string]digest
	trusted bool
	pending bool            // a failed call may have changed visible files
	gen     string          // atomic: generation directory disk lives in
	made    map[fileID]bool // atomic: generation directories this Writer created
	retired *retiredGen     // atomic: the generation before gen, kept for reuse
	paged   *paged          // a SyncPage under way; nil when none
	stale   []string        // atomic: generations Tidy removes
	man     *manifest       // plain: what the writer created, as on disk
	now     func() time.Time
	exact   bool // a file created with FileMode gets exactly FileMode (umask and default ACLs take nothing)

	// For tests: retired generations reused, and those that failed while
	// being brought up to date (not those refused before).
	reuses, reuseFailures int
}

// New checks opts and returns a Writer with an empty desired state. It
// creates opts.Dir if needed and fails if it is not a writable directory, or
// if a chown to opts.UID/opts.GID is not permitted (wrapping
// [ErrChownNotPermitted]). New does not modify existing files; call Sync.
func New(opts Options) (*Writer, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	exact, err := probe(opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		opts:    opts,
		log:     log.With("component", "writer"),
		euid:    os.Geteuid(),
		egid:    os.Getegid(),
		bad:     make(map[string]Rejection),
		made:    make(map[fileID]bool),
		desired: make(map[string][]byte),
		warned:  make(map[string]bool),
		disk:    make(map[string]digest),
		now:     time.Now,
		exact:   exact,
	}, nil
}

func (o *Options) fill() error {
	if o.Dir == "" {
		return errors.New("target directory not set; give a directory to write files to")
	}
	if o.FileMode == 0 {
		o.FileMode = 0o600
	}
	if o.DirMode == 0 {
		o.DirMode = 0o755
	}
	if o.ReuseAfter == 0 {
		o.ReuseAfter = DefaultReuseAfter
	}
	if o.FileMode&^fs.ModePerm != 0 || o.DirMode&^fs.ModePerm != 0 {
		return fmt.Errorf("file mode %o or directory mode %o has bits beyond 0777; use plain permission bits", o.FileMode, o.DirMode)
	}
	if o.UID < -1 || o.GID < -1 {
		return fmt.Errorf("invalid owner %d:%d; use -1 to keep the default", o.UID, o.GID)
	}
	if o.Layout != Atomic && o.Layout != Plain {
		return fmt.Errorf("unknown layout %d", o.Layout)
	}
	return nil
}

// probe creates the target and checks that a file can be created (and
// chowned, if asked) in it. The probe file is unnamed (O_TMPFILE) where the
// file system allows, and chowned through its descriptor, never by name.
// It reports whether the probe, created with mode FileMode, got exactly
// that mode: then the umask (which dispenser never changes) and the
// target's default ACL take nothing from it, and files created in
// directories the writer makes below the target need no chmod.
func probe(o Options) (exact bool, err error) {
	fi, err := os.Stat(o.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return false, fmt.Errorf("create target directory: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("target directory: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("target %s is not a directory; point it at a directory", o.Dir)
	}
	f, err := probeFile(o.Dir, uint32(o.FileMode))
	if err != nil {
		return false, fmt.Errorf("target directory not writable: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		exact = fi.Mode().Perm() == o.FileMode
	}
	if o.UID == -1 && o.GID == -1 {
		return exact, nil
	}
	err = f.Chown(o.UID, o.GID)
	if errors.Is(err, unix.EPERM) {
		return false, fmt.Errorf("%w (owner %d:%d, running as uid %d)", ErrChownNotPermitted, o.UID, o.GID, os.Geteuid())
	}
	if err != nil {
		return false, fmt.Errorf("chown in target directory: %w", err)
	}
	return exact, nil
}

// probeFile creates a file in dir that no other process can reach by name:
// an O_TMPFILE, or where the file system has none, a named file that is
// unlinked at once (only if the name still holds it).
func probeFile(dir string, mode uint32) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, mode)
	if err == nil {
		return os.NewFile(uintptr(fd), "probe"), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	name := tempName("..probe")
	fd, err = unix.Openat(dfd, name, oNew, mode)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil {
		removeSame(dfd, name, &st)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Sync replaces the whole desired state with full and makes the managed part
// of the target mirror it exactly. It inspects the disk rather than trusting
// earlier calls: files are compared byte for byte and rewritten if they
// differ, modes and owners are corrected, and entries left by an earlier
// process (other generations, stale symlinks, manifest entries) are removed.
// Use it at start-up and on every resync. The writer keeps the values of
// full (the caller must not modify them) only until their files are
// written; then it keeps a digest of each (see [ErrResync]).
//
// On error the desired state is kept, so the next Sync or Apply retries. In
// the atomic layout the previous snapshot stays intact and readable; in the
// plain layout files written before the failure are already new.
func (w *Writer) Sync(full map[string][]byte) (Result, error) {
	w.abandonPaged()
	w.desired = make(map[string][]byte, len(full))
	for k, v := range full {
		if v == nil {
			v = []byte{}
		}
		w.desired[k] = v
	}
	w.trusted = false
	return w.reconcile(true)
}

// Apply changes the desired state by changes, in order, and brings the
// target up to date. In the atomic layout all changes become visible at once.
// Apply(nil) retries after an earlier error. The writer copies the values.
// Between Syncs Apply trusts its memory of what it wrote: damage done to the
// target by others is repaired by the next Sync, not by Apply. It looks only
// at the changed keys (see "Cost of a change"); the first call after an
// error inspects the whole target, as Sync does.
//
// On error the desired state is kept, so the next call retries. In the
// atomic layout the previous snapshot stays intact and readable; in the
// plain layout files written before the failure are already new.
func (w *Writer) Apply(changes []Change) (Result, error) {
	w.abandonPaged()
	w.Tidy()
	if !w.trusted || w.index == nil {
		for _, c := range changes {
			if c.Delete {
				delete(w.desired, c.Key)
			} else {
				w.desired[c.Key] = clone(c.Value)
			}
		}
		return w.reconcile(false)
	}
	touched := make(map[string]bool, len(changes))
	for _, c := range changes {
		w.index.set(w.desired, c, touched)
	}
	for k := range touched {
		w.index.refresh(k, w.desired)
	}
	return w.applyDelta(touched)
}

// Tidy removes what the last Apply left to be removed later, so that it
// could return (and the caller signal) sooner: in the atomic layout, a
// retired generation that was replaced by a fresh one (readers of
// "..data" never see it again). A caller that signals after Apply calls
// Tidy after signalling; otherwise the next Apply does it first. What
// cannot be removed is left alone (the next Sync removes every leftover).
func (w *Writer) Tidy() {
	if len(w.stale) == 0 {
		return
	}
	s := w.newState(nil, false)
	if w.openTarget(s) == nil {
		for _, g := range w.stale {
			s.removeGen(g) // only if it is still the writer's
		}
		s.top.close()
	}
	w.stale = nil
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte(nil), b...)
}

func (w *Writer) reconcile(full bool) (Result, error) {
	w.index = buildIndex(w.desired)
	w.retired = nil // the full run removes every other generation
	valid := slices.Sorted(maps.Keys(w.index.valid))
	s := w.newState(valid, full)
	err := w.openTarget(s)
	if err == nil {
		defer s.top.close()
		for k, v := range w.desired {
			if v == nil && !w.index.valid[k] {
				s.keepValue(k)
			}
		}
		if w.opts.Layout == Plain {
			err = s.plain()
		} else {
			err = s.atomic()
		}
	}
	res, err := w.finish(s, err)
	if err == nil {
		disk := make(map[string]digest, len(valid))
		for _, k := range valid {
			if _, bad := s.bad[k]; !bad || w.opts.Layout == Atomic {
				disk[k] = w.sum(k) // atomic: an unwritable key's file is in the generation
			}
		}
		w.disk = disk
		for k := range disk {
			w.drop(k)
		}
	}
	return res, err
}

func (w *Writer) newState(valid []string, full bool) *state {
	return &state{w: w, valid: valid, full: full, wrote: make(map[string]bool), bad: make(map[string]Rejection)}
}

// finish completes the result of a run, remembers which keys are
// unwritable and whether the disk can be trusted next time.
func (w *Writer) finish(s *state, err error) (Result, error) {
	for k := range s.wrote {
		if _, bad := s.bad[k]; !bad {
			s.res.Written++
		}
	}
	s.res.Changed = s.res.Changed || s.res.Written > 0 || s.res.Removed > 0
	if err != nil {
		for k, r := range w.bad { // not retried this time: still unwritable
			if _, done := s.bad[k]; !done && w.index.valid[k] {
				s.bad[k] = r
			}
		}
	}
	w.bad = s.bad
	s.res.Rejected = slices.Collect(maps.Values(w.index.rejected))
	for _, r := range s.bad {
		s.res.Rejected = append(s.res.Rejected, r)
	}
	slices.SortFunc(s.res.Rejected, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	w.logRejections(s.res.Rejected)
	if err != nil {
		w.trusted = false
		w.pending = w.pending || s.res.Changed
		return s.res, err
	}
	s.res.Changed = s.res.Changed || w.pending
	w.pending = false
	w.trusted = true
	return s.res, nil
}

// applyDelta brings the target up to date after Apply changed the keys in
// touched, while the writer trusts its memory of the disk: only those keys,
// and keys unwritable last time, are looked at.
func (w *Writer) applyDelta(touched map[string]bool) (Result, error) {
	work := make([]string, 0, len(touched)+len(w.bad))
	for k := range touched {
		work = append(work, k)
	}
	for k := range w.bad {
		if !touched[k] {
			work = append(work, k)
		}
	}
	slices.Sort(work)
	var delta []string // keys whose file must change
	for _, k := range work {
		_, want := w.desired[k]
		want = want && w.index.valid[k]
		d, have := w.disk[k]
		if want != have || want && w.sum(k) != d {
			delta = append(delta, k)
		}
	}
	s := w.newState(nil, false)
	if len(delta) == 0 && len(w.bad) == 0 {
		return w.finish(s, nil)
	}
	err := w.openTarget(s)
	if err == nil {
		defer s.top.close()
		for _, k := range delta {
			if !w.index.valid[k] {
				s.keepValue(k)
			}
		}
		if w.opts.Layout == Plain {
			err = s.plainDelta(delta)
		} else {
			err = s.atomicDelta(delta)
		}
	}
	if errors.Is(err, errStale) { // the disk is not what the writer left: look at all of it
		w.trusted = false
		return w.reconcile(false)
	}
	res, err := w.finish(s, err)
	if err == nil {
		for _, k := range delta {
			_, bad := s.bad[k]
			if w.index.valid[k] && (!bad || w.opts.Layout == Atomic) {
				w.disk[k] = w.sum(k)
				w.drop(k)
			} else {
				delete(w.disk, k)
			}
		}
	}
	return res, err
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

// errStale says that the disk is not what the writer's memory says.
var errStale = errors.New("target changed behind the writer's back")

// openTarget opens the target directory once for the run; every later
// access is relative to this descriptor.
func (w *Writer) openTarget(s *state) error {
	fd, err := unix.Open(w.opts.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open target: %w", &fs.PathError{Op: "open", Path: w.opts.Dir, Err: err})
	}
	if s.top, err = newTree(fd); err != nil {
		return fmt.Errorf("open target: %w", err)
	}
	return nil
}

// unwritable records that valid key could not be written, and why.
func (s *state) unwritable(key, detail string) {
	s.bad[key] = reject(key, ReasonUnwritable, detail)
}

// isBatchErr reports whether err is about the file system as a whole rather
// than one key: every other key would fail the same way.
func isBatchErr(err error) bool {
	for _, e := range []error{unix.ENOSPC, unix.EDQUOT, unix.EFBIG, unix.EROFS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unwritableDetail turns a per-key failure into the operator message.
func unwritableDetail(err error) string {
	var no *notOwnedError
	if errors.As(err, &no) {
		return "cannot write into " + err.Error()
	}
	return fmt.Sprintf("cannot write it: %v; unmount or remove what is in the way, or fix its permissions", err)
}

func (w *Writer) logRejections(rejected []Rejection) {
	now := make(map[string]bool, len(rejected))
	for _, r := range rejected {
		now[r.Key] = true
		if !w.warned[r.Key] {
			full := r
			full.Key = w.opts.KeyPrefix + r.Key
			w.log.Warn(full.Error(), "key", full.Key, "reason", r.Reason)
		}
	}
	w.warned = now
}
