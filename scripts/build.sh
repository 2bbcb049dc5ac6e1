#!/bin/sh
# Builds the release binaries into OUTDIR, exactly as the Dockerfile does:
# static (no cgo), stripped, -trimpath, the version stamped at link time.
#   OUTDIR/dispenser              without the embedded etcd server (-tags noembed)
#   OUTDIR/etcha
#   OUTDIR/etcd-config-dispenser  -> dispenser, the original tool's path
# Usage: sh scripts/build.sh OUTDIR [VERSION]
set -eu
out=${1:?usage: sh scripts/build.sh OUTDIR [VERSION]}
version=${2:-dev}
ldflags="-s -w -X github.com/dispenser-dev/dispenser/internal/version.Version=$version"
mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -tags noembed -o "$out/dispenser" ./cmd/dispenser
CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out/etcha" ./cmd/etcha
ln -sf dispenser "$out/etcd-config-dispenser"
