// Command dispenser writes every key under an etcd prefix as a file under a
// target directory, starts a child process once the files exist, and sends
// it a signal whenever they change. See README.md.
package main

import (
	"context"
	"os"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(report(os.Stderr, err))
}
