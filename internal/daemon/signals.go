package daemon

import (
	"os"
	"os/signal"
	"slices"

	"github.com/dispenser-dev/dispenser/internal/supervisor"
)

// Signals delivers the signals the daemon acts on: the stop signals and
// every other signal to forward, each on its own channel, so that a burst
// of others cannot crowd out a stop.
type Signals struct {
	stops  chan os.Signal
	others chan os.Signal
}

// Subscribe starts delivery of the signals. Call it before anything slow,
// so that no signal is lost during start-up, and Stop when done.
func Subscribe() *Signals {
	s := &Signals{stops: make(chan os.Signal, 4), others: make(chan os.Signal, 64)}
	signal.Notify(s.stops, stopSignals()...)
	signal.Notify(s.others, slices.DeleteFunc(supervisor.ForwardedSignals(), func(sig os.Signal) bool {
		return slices.Contains(stopSignals(), sig)
	})...)
	return s
}

// Stop ends the delivery.
func (s *Signals) Stop() {
	signal.Stop(s.stops)
	signal.Stop(s.others)
}
