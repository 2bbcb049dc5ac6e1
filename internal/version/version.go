// Package version names the build of the binaries: the release string
// stamped at link time, else the module version the go command recorded,
// else "dev".
package version

import "runtime/debug"

// Version is set at link time by scripts/build.sh:
//
//	-ldflags "-X github.com/dispenser-dev/dispenser/internal/version.Version=v1.2.3"
var Version string

// String returns the version to print for --version.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
