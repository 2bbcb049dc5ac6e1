package etcdenv

import (
	"context"
	"errors"
	"testing"

	"github.com/dispenser-dev/dispenser/internal/etcdtest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// startAuthEtcd starts etcd with authentication enabled, the key /app/config
// = "v" and /other = "x", and a user "reader" (password "s3cret") that may
// only read keys under /app/.
func startAuthEtcd(t *testing.T) *etcdtest.Server {
	t.Helper()
	// The lowest bcrypt cost keeps password checks fast under -race.
	srv := etcdtest.Start(t, func(cfg *embed.Config) { cfg.BcryptCost = 4 })
	admin := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), okTimeout)
	defer cancel()
	steps := []struct {
		what string
		do   func() error
	}{
		{"put /app/config", func() error { _, err := admin.Put(ctx, "/app/config", "v"); return err }},
		{"put /other", func() error { _, err := admin.Put(ctx, "/other", "x"); return err }},
		{"add role", func() error { _, err := admin.RoleAdd(ctx, "app-reader"); return err }},
		{"grant read on /app/", func() error {
			_, err := admin.RoleGrantPermission(ctx, "app-reader", "/app/", clientv3.GetPrefixRangeEnd("/app/"),
				clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"add reader", func() error { _, err := admin.UserAdd(ctx, "reader", "s3cret"); return err }},
		{"grant role to reader", func() error { _, err := admin.UserGrantRole(ctx, "reader", "app-reader"); return err }},
		{"add root", func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err }},
		{"grant root role", func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err }},
		{"enable auth", func() error { _, err := admin.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("auth setup: %s: %v", s.what, err)
		}
	}
	return srv
}

func TestAuth(t *testing.T) {
	srv := startAuthEtcd(t)
	dir := t.TempDir()
	ep := srv.Endpoint()
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"separate", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME": "reader", "ETCD_PASSWORD": "s3cret"}},
		{"combined", map[string]string{"ETCD_ENDPOINTS": ep, "ETCD_USERNAME_AND_PASSWORD": "reader:s3cret"}},
		{"separate files", map[string]string{"ETCD_ENDPOINTS": ep,
			"ETCD_USERNAME_FILE": writeFile(t, dir, "user", "reader\n"),
			"ETCD_PASSWORD_FILE": writeFile(t, dir, "password", "s3cret\n")}},
		{"combined file", map[string]string{"ETCD_ENDPOINTS": ep,
			"ETCD_USERNAME_AND_PASSWORD_FILE": writeFile(t, dir, "both", "reader:s3cret\n")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.env)
			ctx, cancel := context.WithTimeout(context.Background(), okTimeout)
			defer cancel()
			resp, err := c.Get(ctx, "/app/", clientv3.WithPrefix())
			if err != nil {
				t.Fatalf("get /app/: %v", err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
				t.Fatalf("get /app/ = %v, want /app/config = v", resp.Kvs)
			}
			if _, err := c.Put(ctx, "/app/config", "w"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Errorf("put /app/config: err = %v, want %v", err, rpctypes.ErrPermissionDenied)
			}
			if _, err := c.Get(ctx, "/other"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Errorf("get /other: err = %v, want %v", err, rpctypes.ErrPermissionDenied)
			}
		})
	}
}

func TestAuthWrongPassword(t *testing.T) {
	srv := startAuthEtcd(t)
	for _, env := range []map[string]string{
		{"ETCD_ENDPOINTS": srv.Endpoint(), "ETCD_USERNAME": "reader", "ETCD_PASSWORD": "wrong"},
		{"ETCD_ENDPOINTS": srv.Endpoint(), "ETCD_USERNAME_AND_PASSWORD": "nobody:s3cret"},
	} {
		cfg, err := Config(MapLookup(env))
		if err != nil {
			t.Fatalf("Config() error = %v", err)
		}
		// clientv3.New authenticates, bounded by cfg.DialTimeout.
		c, err := clientv3.New(cfg)
		if err == nil {
			c.Close()
			t.Fatalf("clientv3.New() as %q succeeded, want an authentication error", cfg.Username)
		}
		if !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Errorf("clientv3.New() as %q: err = %v, want %v", cfg.Username, err, rpctypes.ErrAuthFailed)
		}
	}
}
