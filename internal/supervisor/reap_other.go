//go:build !linux

package supervisor

import "errors"

func becomeSubreaper() error {
	return errors.New("reaping orphans needs Linux; do not set Reap")
}

func (c *Child) reapUntilExit() {}

func (c *Child) reapExited() {}

func (c *Child) awaitExit() {}
