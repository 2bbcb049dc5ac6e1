package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

var (
	errStopped = errors.New("stopped")
	errGaveUp  = errors.New("--initial-timeout passed")
)

// Connect creates the etcd client. Without authentication that never waits;
// with it, clientv3.New must reach etcd to log in, so it is retried (with
// backoff, each failure logged) until it works. A stop signal or ctx's end
// interrupts it, even mid-attempt, and returns a nil client and nil error;
// --initial-timeout returns an error. On success the caller must call
// closeClient.
func (d *Daemon) Connect(ctx context.Context, cfg clientv3.Config) (c *clientv3.Client, closeClient func(), err error) {
	// cfg.Context becomes the client's own: cancelling it closes the client,
	// so it is cancelled only on failure or by closeClient.
	connCtx, cancel := context.WithCancelCause(ctx)
	cfg.Context = connCtx
	attempting, watching := make(chan struct{}), make(chan struct{})
	go func() { // stop signals and the timeout interrupt an attempt
		defer close(watching)
		for {
			select {
			case s := <-d.stops:
				d.log.Info("stopped before connecting to etcd", "signal", s)
				cancel(errStopped)
				return
			case s := <-d.sigs:
				d.forward(s)
			case <-d.giveUp:
				cancel(errGaveUp)
				return
			case <-attempting:
				return
			}
		}
	}()
	defer func() { close(attempting); <-watching }()

	delay := 500 * time.Millisecond
	for {
		c, err := clientv3.New(cfg)
		if err == nil {
			close(attempting)
			<-watching
			attempting = make(chan struct{}) // for the deferred close
			if connCtx.Err() != nil {        // a stop or the timeout won the race
				c.Close()
				return nil, nil, d.interrupted(connCtx, cancel, cfg, nil)
			}
			return c, func() { c.Close(); cancel(nil) }, nil
		}
		d.connectErr.Store(&err)
		if connCtx.Err() != nil {
			return nil, nil, d.interrupted(connCtx, cancel, cfg, err)
		}
		d.log.Warn("connect to etcd failed; retrying (check ETCD_ENDPOINTS, the credentials and that etcd is up)",
			"endpoints", cfg.Endpoints, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
			delay = min(2*delay, 30*time.Second)
		case <-connCtx.Done():
		}
	}
}

// interrupted ends an interrupted connect: nil for a stop, an error for
// --initial-timeout.
func (d *Daemon) interrupted(connCtx context.Context, cancel context.CancelCauseFunc, cfg clientv3.Config, last error) error {
	cause := context.Cause(connCtx)
	cancel(nil)
	if !errors.Is(cause, errGaveUp) {
		return nil
	}
	return fmt.Errorf("could not connect to etcd at %v within --initial-timeout=%v (last error: %v)",
		cfg.Endpoints, d.opts.InitialTimeout, last)
}

// followConn logs when the client loses its connection to etcd and when it
// gets it back. The client reconnects (and the watch resumes) by itself,
// so without this an outage would be silent until the watch probe noticed.
func (d *Daemon) followConn(ctx context.Context, conn *grpc.ClientConn, endpoints []string) {
	state, lost := conn.GetState(), false
	for conn.WaitForStateChange(ctx, state) {
		state = conn.GetState()
		switch {
		case state == connectivity.TransientFailure && !lost:
			lost = true
			d.log.Warn("lost the connection to etcd; retrying, the files stay as they are", "endpoints", endpoints)
		case state == connectivity.Ready && lost:
			lost = false
			d.log.Info("connected to etcd again", "endpoints", endpoints)
		}
	}
}

// connHealth is nil while the client has a usable connection to etcd.
func connHealth(conn *grpc.ClientConn) error {
	switch st := conn.GetState(); st {
	case connectivity.TransientFailure, connectivity.Connecting, connectivity.Shutdown:
		return fmt.Errorf("not connected to etcd (connection %s)", strings.ToLower(st.String()))
	}
	return nil
}
