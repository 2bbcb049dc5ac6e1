//go:build !linux

package supervisor

import (
	"errors"
	"os"
	"syscall"
)

func becomeSubreaper() error {
	return errors.New("reaping orphans needs Linux; do not set Reap")
}

func (c *Child) reapUntilExit() {}

func (c *Child) reapExited() {}

func (c *Child) awaitExit() {}

// Foreground reports false: handing a terminal to the child needs Linux.
func Foreground(f *os.File) bool { return false }

func sysProcAttr(term *os.File) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true} // Foreground never hands out a terminal here
}

func systemSignalNames() []namedSignal { return nil }
