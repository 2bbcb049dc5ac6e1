//go:build !linux

package command

// pendingBytes returns 0: only Linux tells how many bytes wait in a pipe.
func pendingBytes(fd int) int { return 0 }
