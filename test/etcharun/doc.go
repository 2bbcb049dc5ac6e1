// Package etcharun tests `etcha run` and `etcha push` end to end: it builds
// the etcha binary, runs it as a real process against etcd run as real
// processes (internal/etcdproc), kills etcd with SIGKILL while etcha watches
// an etcd:/// pull path, pushes with the binary and stops etcha with SIGTERM.
//
// The package has no non-test code; run it with
//
//	go test -race ./test/etcharun/
package etcharun
