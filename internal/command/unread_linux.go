package command

import "golang.org/x/sys/unix"

// pendingBytes returns the bytes waiting to be read in the pipe fd.
func pendingBytes(fd int) int {
	n, _ := unix.IoctlGetInt(fd, unix.TIOCINQ)
	return n
}
