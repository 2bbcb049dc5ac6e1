// Command etcha renders, builds, signs, verifies and runs Etcha patterns:
// generate-keys, build, local, render, jwt, compare, test, lint, version,
// run (listen mode: pull, push receiver, watched etcd keys, events,
// webhooks, shell sessions, metrics), push and shell. See
// internal/etcha and README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(os.Stderr, err))
}
