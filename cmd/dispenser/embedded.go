//go:build !noembed

package main

import (
	"context"

	"github.com/dispenser-dev/dispenser/internal/devetcd"
)

// startEmbedded starts the in-process etcd of --embedded-etcd. Build with
// -tags noembed for a production binary without the etcd server in it.
func startEmbedded(ctx context.Context, dir, listen string) (endpoint string, stop func(), err error) {
	s, err := devetcd.Start(ctx, dir, listen)
	if err != nil {
		return "", nil, err
	}
	return s.Endpoint(), s.Close, nil
}
