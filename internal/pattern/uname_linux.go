package pattern

import "syscall"

// uname returns the kernel release, kernel version and machine.
func uname() (string, string, string) {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "", "", ""
	}
	return cString(u.Release[:]), cString(u.Version[:]), cString(u.Machine[:])
}

// cString converts a NUL-terminated utsname field; its element type is
// int8 or uint8 depending on the architecture.
func cString[T int8 | uint8](b []T) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
