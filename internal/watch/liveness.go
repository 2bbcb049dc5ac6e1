package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Liveness signals, Status.Liveness. Every ProgressInterval the Watcher
// asks etcd for a sign of life on the watch's stream and expects it within
// the next interval; see Options.ProgressInterval.
const (
	// LivenessProgress: a progress request on the watch's stream, answered
	// by a progress notification. etcd answers these; its gRPC proxy
	// (etcd grpc-proxy) does not, it only logs "not supported request
	// type by gRPC proxy".
	LivenessProgress = "progress-request"
	// LivenessProbe: a short-lived watch of a key of its own (under the
	// prefix, so the same read permission covers it, and new each time,
	// so a gRPC proxy cannot answer it from a watch it already has),
	// created on the watch's stream and confirmed by etcd; then cancelled.
	// The proxy passes it through to etcd, so its confirmation proves the
	// whole path: this client, the proxy, its stream to etcd, and etcd.
	// It costs etcd a watch creation and a one-key count (the proxy's
	// permission check), not a read of the prefix.
	LivenessProbe = "probe-watch"
)

// livenessRounds is how many rounds in a row must see a probe confirmed
// and the progress request unanswered before the Watcher switches to
// probes. Two, so that one progress request that etcd answered late (it
// defers them while a watcher catches up) does not switch a direct
// connection.
const livenessRounds = 2

// checkLiveness runs on every ProgressInterval tick. It closes the round
// that began at the previous tick, fails the watch if etcd answered
// nothing in the last maxMissedProgress rounds, and starts the next round.
//
// Until the Watcher knows which signal works it sends both a progress
// request and a probe each round; a progress notification settles on
// progress requests, and livenessRounds rounds in a row with the probe
// confirmed but the progress request unanswered settle on probes (and
// stop the progress requests, which a proxy logs as errors). Once on
// progress requests, a round whose request goes unanswered adds a probe to
// the next round, so a switch in front of etcd is noticed too. The choice
// is kept for the Watcher's lifetime and logged once, at info.
func (f *follower) checkLiveness(wctx context.Context) string {
	w := f.w
	if !f.asked.IsZero() {
		if f.heard.Before(f.asked) {
			f.missed++
		} else {
			f.missed = 0
		}
		progressOK := f.sentProgress && !f.progressAt.Before(f.asked)
		probeOK := f.sentProbe && !f.probeAt.Before(f.asked)
		f.progressLate = f.sentProgress && !progressOK
		switch {
		case progressOK:
			f.unanswered = 0
			w.settle(LivenessProgress)
		case f.progressLate && probeOK:
			if f.unanswered++; f.unanswered >= livenessRounds {
				w.settle(LivenessProbe)
			}
		}
	}
	if f.missed >= maxMissedProgress {
		what := "progress requests"
		if w.liveness == LivenessProbe {
			what = "probe watches"
		}
		return fmt.Sprintf("%s: etcd answered none of the last %d %s, sent every %s",
			CauseProgressTimeout, f.missed, what, w.progress)
	}
	f.asked = time.Now()
	f.sentProgress = w.liveness != LivenessProbe
	f.sentProbe = w.liveness != LivenessProgress || f.progressLate
	if f.sentProbe {
		f.probe(wctx)
	}
	if f.sentProgress {
		f.requestProgress(wctx)
	}
	return ""
}

// requestProgress sends a progress request on the watch's stream.
func (f *follower) requestProgress(wctx context.Context) {
	// RequestProgress blocks while the client reconnects; bound it so that
	// the next tick can notice the silence. The derived context keeps the
	// watch context's metadata, so it addresses the watch's own stream.
	// (If that stream has just ended, the client opens a new one that only
	// Client.Close releases; this needs a tick to race the watch's end.)
	ctx, cancel := context.WithTimeout(wctx, f.w.progress)
	defer cancel()
	if err := f.w.client.RequestProgress(ctx); err != nil && wctx.Err() == nil {
		f.w.log.Debug("etcd progress request failed", "err", err)
	}
}

// probe replaces the current probe watch, if any, by a new one. Its
// context derives from the watch's, so it shares the watch's stream, and
// it ends with the round (Watch blocks while the client reconnects).
func (f *follower) probe(wctx context.Context) {
	f.stopProbe()
	ctx, cancel := context.WithTimeout(wctx, f.w.progress)
	f.probeCancel = cancel
	f.w.probes++
	key := f.w.probeKey + strconv.FormatUint(f.w.probes, 10)
	f.probeCh = f.w.client.Watch(ctx, key, clientv3.WithCreatedNotify())
}

// probed handles a response of the probe watch: its confirmation is a sign
// of life; then, or when the watch ended, the probe is stopped.
func (f *follower) probed(resp clientv3.WatchResponse, ok bool) {
	if ok && resp.Created && resp.Err() == nil {
		f.heard = time.Now()
		f.probeAt = f.heard
		f.w.update(func(s *Status) {
			s.LastHeard = f.heard
			s.Probes++
		})
	} else if ok && resp.Err() != nil {
		f.w.log.Debug("etcd probe watch failed", "err", resp.Err())
	}
	f.stopProbe()
}

// stopProbe cancels the current probe watch, if any.
func (f *follower) stopProbe() {
	if f.probeCancel != nil {
		f.probeCancel()
	}
	f.probeCh, f.probeCancel = nil, nil
}

// settle records which liveness signal works, and logs a change.
func (w *Watcher) settle(signal string) {
	if w.liveness == signal || w.liveness == LivenessProbe {
		return
	}
	w.liveness = signal
	w.update(func(s *Status) { s.Liveness = signal })
	if signal == LivenessProbe {
		w.log.Info("etcd does not answer watch progress requests (etcd's gRPC proxy does not pass them); liveness signal: a probe watch every "+w.progress.String(),
			"liveness", signal)
		return
	}
	w.log.Info("etcd answers watch progress requests; liveness signal: a progress request every "+w.progress.String(),
		"liveness", signal)
}

// newProbeKey returns the start of this Watcher's probe keys: a key under
// the first prefix that no one else uses, followed by a sequence number.
func newProbeKey(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + "\x00dispenser-liveness-probe/" + hex.EncodeToString(b) + "/"
}
