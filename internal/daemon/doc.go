// Package daemon is dispenser's loop: it follows an etcd prefix through
// internal/watch, writes each batch with internal/writer, supervises the
// child with internal/supervisor and sends it one reload signal per batch
// that changed files. Everything happens on one goroutine, so a write is
// never interrupted by a signal.
//
// It takes an Options struct and, for Run, a ready etcd client (Connect
// makes one while honouring stop signals and the initial timeout). It
// parses no flags and never touches os.Exit or os.Args.
package daemon
