package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fileWatch sees one file in each of many directories change, through
// inotify: dispenser makes a file visible by renaming it (--layout=plain)
// or the ..data link (atomic) into the directory, which is IN_MOVED_TO,
// and at the first sync of the atomic layout by creating the file's
// symlink after ..data, which is IN_CREATE.
type fileWatch struct {
	dirs []string
	name string
	f    *os.File // the inotify descriptor, non-blocking, so reads take deadlines
	wd   map[int32]int
	buf  []byte
}

func watchFiles(dirs []string, name string) (*fileWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &fileWatch{dirs: dirs, name: name, f: os.NewFile(uintptr(fd), "inotify"), wd: map[int32]int{},
		buf: make([]byte, 64<<10)}
	for i, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO|unix.IN_CREATE|unix.IN_CLOSE_WRITE)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("inotify watch %s: %w (raise fs.inotify.max_user_watches?)", d, err)
		}
		w.wd[int32(wd)] = i
	}
	return w, nil
}

func (w *fileWatch) close() { w.f.Close() }

// has reports whether directory i's file holds a value tagged tag.
func (w *fileWatch) has(i int, tag string) bool {
	b, err := os.ReadFile(filepath.Join(w.dirs[i], w.name))
	return err == nil && tagOf(b) == tag
}

// awaitAll returns, in increasing order, when each directory's file was
// first seen holding a value tagged tag: at once for those that already
// do, else at the inotify event that made it so.
func (w *fileWatch) awaitAll(ctx context.Context, tag string) ([]time.Time, error) {
	at := make([]time.Time, len(w.dirs))
	left := len(w.dirs)
	check := func(i int, now time.Time) {
		if at[i].IsZero() && w.has(i, tag) {
			at[i], left = now, left-1
		}
	}
	for i := range w.dirs {
		check(i, time.Now())
	}
	deadline := time.Now().Add(waitLimit)
	for left > 0 {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d files did not show %s within %v", left, len(w.dirs), tag, waitLimit)
		}
		w.f.SetReadDeadline(time.Now().Add(time.Second)) // to look at ctx and the deadline
		n, err := w.f.Read(w.buf)
		now := time.Now()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			for i := range w.dirs { // a second without events: a missed one would show here, late
				check(i, now)
			}
			continue
		} else if err != nil {
			return nil, fmt.Errorf("inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				for i := range w.dirs {
					check(i, now)
				}
			} else if i, ok := w.wd[ev.Wd]; ok {
				check(i, now)
			}
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at, nil
}
