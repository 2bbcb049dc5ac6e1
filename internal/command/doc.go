// Package command decodes, validates and runs Etcha Command lists (spec §2):
// check/change/remove scripts with their decision rules per mode, onChange/
// onFail/onRemove triggers, groups as scopes, the envPrefix and ${VAR}
// environment, the exec override chain, and etcha:<name> events.
//
// It does not render patterns, dispatch events to sources, run containers
// (Run refuses a list in which any command's exec asks for one, before
// running anything), read the process environment (envInherit takes
// Options.Environ), apply timeouts other than the caller's context, or keep
// state between runs. Diff computes which commands
// a new pattern drops; running them is the caller's job. Capture runs one
// program exactly as a command script runs, for Jsonnet natives such as
// getCmd (spec §11.14).
package command
