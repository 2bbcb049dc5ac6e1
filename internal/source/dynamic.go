package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Add registers a source after New, for callers whose sources come and go
// (dispenser's pattern keys), and restores its current pattern as New
// does. Nothing runs. An empty name, a name already registered, or a call
// after Close is an error (ErrClosed for the last). ctx bounds the
// restore's render.
//
// Add is safe with concurrent calls of the other methods.
func (e *Engine) Add(ctx context.Context, c Config) error {
	if c.Name == "" {
		return errors.New("source with an empty name; give every source a name")
	}
	e.mu.Lock()
	_, dup := e.sources[c.Name]
	e.mu.Unlock()
	if dup {
		return fmt.Errorf("source %q is registered already; add each source once", c.Name)
	}
	s, err := newSrc(c)
	if err != nil {
		return err
	}
	e.restore(ctx, s) // before s is visible, so s.cur needs no lock
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if _, dup := e.sources[c.Name]; dup {
		return fmt.Errorf("source %q is registered already; add each source once", c.Name)
	}
	e.sources[c.Name] = s
	i, _ := slices.BinarySearch(e.names, c.Name)
	e.names = slices.Insert(slices.Clip(e.names), i, c.Name)
	return nil
}
