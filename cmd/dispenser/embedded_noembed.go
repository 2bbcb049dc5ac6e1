//go:build noembed

package main

import (
	"context"
	"errors"
)

func startEmbedded(context.Context, string, string) (string, func(), error) {
	return "", nil, usageError{errors.New("--embedded-etcd: this binary was built without the embedded etcd (-tags noembed); set ETCD_ENDPOINTS instead")}
}
