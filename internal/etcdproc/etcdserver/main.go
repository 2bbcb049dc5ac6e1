// Command etcdserver is the etcd server of go.etcd.io/etcd/server/v3, built
// from this module's pinned version so that tests can run etcd as a real
// process (see package etcdproc) on a machine that has only Go. It takes
// etcd's own flags and is not meant for production use.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
