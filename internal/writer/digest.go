package writer

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// ErrResync is wrapped by the error of a call that needs the content of a
// key it no longer holds: the writer keeps only a digest of what it wrote,
// and the file it wrote is gone or changed (someone damaged the target).
// The caller answers with a fresh Sync of the whole state (a new snapshot
// from its source).
var ErrResync = errors.New("the writer no longer holds the content of a damaged file; sync the whole state again")

// digest stands for a value the writer no longer holds: its length and a
// 64-bit hash with a per-process random seed, which nobody outside can
// choose collisions for.
type digest struct {
	n int
	h uint64
}

var seed = maphash.MakeSeed()

func sumOf(b []byte) digest { return digest{n: len(b), h: maphash.Bytes(seed, b)} }

// sum returns the digest of key's desired content: of its value while the
// writer holds it, else of the file on disk it stands for.
func (w *Writer) sum(key string) digest {
	if v := w.desired[key]; v != nil {
		return sumOf(v)
	}
	return w.disk[key]
}

// drop forgets the value of key once its file holds it: from then on the
// writer keeps only the digest in w.disk.
func (w *Writer) drop(key string) {
	if _, ok := w.desired[key]; ok {
		w.desired[key] = nil
	}
}

// value returns the content of key's file. A value the writer dropped is
// read back from the file it wrote (in the generation it left current, or
// in place for the plain layout) and checked against its digest; if that
// file is gone or differs the error wraps ErrResync.
func (s *state) value(key string) ([]byte, error) {
	w := s.w
	if v := w.desired[key]; v != nil {
		return v, nil
	}
	want, ok := w.disk[key]
	if !ok {
		return nil, fmt.Errorf("write %s: %w", key, ErrResync)
	}
	name := key
	if w.opts.Layout == Atomic {
		if w.gen == "" {
			return nil, fmt.Errorf("write %s: %w", key, ErrResync)
		}
		name = path.Join(w.gen, key)
	}
	dir, base := split(name)
	fd, err := s.top.open(dir)
	if err == nil {
		var b []byte
		if b, err = readAt(fd, base, want.n); err == nil && sumOf(b) == want {
			return b, nil
		}
	}
	return nil, fmt.Errorf("write %s: %w", key, ErrResync)
}

// readAt reads regular file name in dirfd, at most limit bytes (one more
// shows that it is longer).
func readAt(dirfd int, name string, limit int) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, oRead, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if !isReg(&st) {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	b := make([]byte, limit+1)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return b[:n], nil
}

// keepValue reads back the value of a desired key whose file is about to
// go because the key became invalid (a conflict), so that it can be
// written again once the conflict is gone. It does nothing if the writer
// holds the value; failing, it leaves that later write to ErrResync.
func (s *state) keepValue(key string) {
	if v, ok := s.w.desired[key]; ok && v == nil {
		if v, err := s.value(key); err == nil {
			s.w.desired[key] = v
		}
	}
}
