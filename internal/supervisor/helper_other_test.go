//go:build !linux

package supervisor

// helperOrphan is the "orphan" helper mode, which needs Linux.
func helperOrphan() int { return 108 }

func helperForeground() int { return 108 }
