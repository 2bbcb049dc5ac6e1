package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// StatePath returns where the JWT of source name is kept under dir:
// <dir>/<name>.jwt, with name path-escaped (url.PathEscape) so that a name
// holding "/" stays one file directly in dir ("web/app" →
// "web%2Fapp.jwt"). dir "" is the working directory.
func StatePath(dir, name string) string {
	if dir == "" {
		dir = "."
	}
	return filepath.Join(dir, url.PathEscape(name)+".jwt")
}

// save writes jwt to the source's state file atomically: a temp file in
// the same directory, fsynced and made 0600 through its descriptor, renamed
// over the old file, then the directory is fsynced.
func (e *Engine) save(name, jwt string) error {
	dir := e.opts.StateDir
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	path := StatePath(dir, name)
	f, err := os.CreateTemp(dir, ".tmp-*.jwt")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(0o600) // CreateTemp makes 0600 already; the umask cannot widen it, but be explicit
	if err == nil {
		_, err = f.WriteString(jwt)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("save %s: sync directory: %w", path, err)
		}
	}
	return nil
}

// load reads a state file: it must be a regular file owned by this
// process's effective uid, not writable by group or others, and within the
// JWT size limit. It is opened without following a symlink or blocking on
// a FIFO.
func (e *Engine) load(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", fmt.Errorf("state file %s is a symlink; remove it", path)
		}
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("state file %s is not a regular file (%s); remove it", path, st.Mode().Type())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return "", fmt.Errorf("state file %s is owned by uid %d, not by this process (uid %d); remove it", path, sys.Uid, os.Geteuid())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("state file %s is writable by group or others (%v); remove it or chmod 600 it", path, st.Mode().Perm())
	}
	limit := e.opts.MaxSize
	if limit <= 0 {
		limit = token.DefaultMaxSize
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return "", fmt.Errorf("read state file %s: %w", path, err)
	}
	return string(b), nil // over the limit: Verify refuses it as too large
}

// restore chooses the source's pattern at start-up (see New).
func (e *Engine) restore(ctx context.Context, s *src) {
	name := s.cfg.Name
	if !s.cfg.NoRestore {
		path := StatePath(e.opts.StateDir, name)
		cur, err := e.restoreFile(ctx, s, path)
		switch {
		case err == nil:
			e.log.Info("Restored pattern for "+name, "source", name, "path", path, "jti", cur.claims.ID, "publicKey", cur.key)
			s.cur = cur
			return
		case errors.Is(err, fs.ErrNotExist):
			e.log.Info("No saved pattern for "+name, "source", name, "path", path)
		default:
			e.log.Error("Saved pattern ignored", "source", name, "path", path, "err", err)
		}
	}
	if s.cfg.Static != nil {
		s.cur = &current{pattern: *s.cfg.Static}
	}
}

func (e *Engine) restoreFile(ctx context.Context, s *src, path string) (*current, error) {
	jwt, err := e.load(path)
	if err != nil {
		return nil, err
	}
	claims, key, err := token.Verify(jwt, e.verifyOptions(s.cfg))
	if err != nil {
		return nil, fmt.Errorf("saved jwt refused: %w", err)
	}
	p, err := e.opts.Renderer.Render(ctx, s.cfg.Name, claims, jwt)
	if err != nil {
		return nil, fmt.Errorf("saved pattern does not render: %w", err)
	}
	return &current{jwt: jwt, claims: claims, key: key.ID, pattern: p}, nil
}
