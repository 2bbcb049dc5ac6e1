//go:build !linux

package pattern

// uname is not implemented outside Linux; the fields stay empty.
func uname() (string, string, string) { return "", "", "" }
