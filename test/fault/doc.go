// Package fault is dispenser's fault suite (issue 4, "Faults that must be
// survived"): every test builds the dispenser binary, runs it as a real
// process against etcd run as real processes (internal/etcdproc), breaks
// something — etcd killed, stopped, compacted behind dispenser's back, a
// cluster member lost, the target filesystem full or read-only, the child
// crashing or leaving zombies — and checks that dispenser brings the files
// up to date with exactly one reload signal once the fault is gone, within
// a bounded time that the test logs as "fault N: back→file …, back→signal …".
//
// The package has no non-test code; run it with
//
//	go test -race ./test/fault/
//
// (-short skips the 3-member cluster, the 10k-key scale test and the PID
// namespace case.) Some cases need root (tmpfs mounts, unshare); they skip
// with the reason when the kernel refuses.
package fault
