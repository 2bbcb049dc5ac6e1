// Command bench measures dispenser against the floor etcd itself sets, on
// this machine, in one run:
//
//	go run ./bench            # every figure, -n samples each
//	go run ./bench -quick     # a few samples each (CI)
//	go run ./bench -json      # machine-readable rows
//	go run ./bench -big       # also the 100k-key sync's peak RSS and the fleet (slow)
//	go run ./bench -only fleet -n 20   # only the fleet through a gRPC proxy
//
// It builds etcd (./internal/etcdproc/etcdserver), dispenser (-tags
// noembed -trimpath, as scripts/build.sh) and etcha from this tree, starts
// one etcd process on 127.0.0.1 with fsync on and its data on tmpfs
// (/dev/shm when present), and runs the real dispenser binary with a real
// child: this program re-executed in child mode, which on SIGHUP reads the
// changed file and reports on its stdout when it has. Each latency is
// measured from just before the Put to the child having read the new
// value; the reference for it is a bare clientv3 watcher on the same prefix
// receiving the same Put. Times are absolute; ratios to a reference
// measured in the same run are the figures to compare across machines.
//
// The figures (1 KiB values throughout):
//   - put → signal with 16 keys under the prefix, against the bare watcher;
//   - a 100-key transaction → signal, against the bare watcher;
//   - put → signal with 10k keys under the prefix, --layout=atomic and
//     plain, against puts under a 16-key prefix in the same layout, taken in
//     turns with them; each prefix's puts are -spacing (1.5 s) apart, past
//     the writer's grace for reusing a retired generation;
//   - the initial sync of 10k keys → child started, against one Get and a
//     serial os.WriteFile of each value; dispenser's peak RSS (VmHWM) then;
//   - with -big, the peak RSS of dispenser --once syncing 100k keys;
//   - etcha render of a signed 100-command JWT, against etcha version;
//   - an etcd outage with compaction: etcd is killed, a key changes and the
//     history is compacted while dispenser cannot reach it, then etcd comes
//     back; from etcd answering reads, the time to dispenser reconnecting,
//     reading the prefix again, writing, and the child reading the file;
//   - with -fleet (or -big), a fleet of -fleet-size (200) dispensers, one
//     process each, through one etcd gRPC proxy: put → first and last of
//     their files, against a bare watcher of etcd; the watchers and watch
//     streams etcd serves; and over one idle minute the dispensers' full
//     resyncs (their logs) and etcd's requests and bytes sent (its /metrics).
//
// -only runs some figures; -dispenser measures a given binary (e.g. an
// older version) instead of building one. It does not measure TLS or a
// remote etcd. Everything it starts is stopped and its temporary directory removed
// before it returns; each wait is bounded (waitLimit), and so is the run
// (runLimit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(child(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
