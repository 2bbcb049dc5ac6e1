package supervisor

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want syscall.Signal
	}{
		{"SIGHUP", syscall.SIGHUP},
		{"HUP", syscall.SIGHUP},
		{"hup", syscall.SIGHUP},
		{"sighup", syscall.SIGHUP},
		{"SigHup", syscall.SIGHUP},
		{"1", syscall.SIGHUP},
		{"SIGUSR1", syscall.SIGUSR1},
		{"usr2", syscall.SIGUSR2},
		{"WINCH", syscall.SIGWINCH},
		{"SIGQUIT", syscall.SIGQUIT},
		{"15", syscall.SIGTERM},
		{"9", syscall.SIGKILL},
		{"SIGALRM", syscall.SIGALRM},
		{"cont", syscall.SIGCONT},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSignal(tt.in)
			if err != nil {
				t.Fatalf("ParseSignal(%q) error = %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSignal(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSignalUnknown(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"SIGFOO", "", "SIG", "0", "-1", "99", "HUPX", "SIG HUP", "1.0"} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseSignal(in)
			if err == nil {
				t.Fatalf("ParseSignal(%q) = %v, want error", in, got)
			}
			wantPrefix := `unknown signal "` + in + `"; use one of HUP, INT, QUIT, `
			if !strings.HasPrefix(err.Error(), wantPrefix) {
				t.Fatalf("ParseSignal(%q) error = %q, want prefix %q", in, err, wantPrefix)
			}
			for _, name := range []string{"USR1", "USR2", "TERM", "WINCH"} {
				if !strings.Contains(err.Error(), ", "+name) {
					t.Errorf("ParseSignal(%q) error = %q, does not list %s", in, err, name)
				}
			}
		})
	}
}

// Every listed name parses back to its signal, with and without "SIG",
// and by number.
func TestSignalNamesRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range signalNames() {
		for _, in := range []string{e.name, "SIG" + e.name, strings.ToLower(e.name)} {
			if got, err := ParseSignal(in); err != nil || got != e.sig {
				t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, e.sig)
			}
		}
		if got, want := sigString(e.sig), "SIG"+e.name; got != want {
			t.Errorf("sigString(%d) = %q, want %q", e.sig, got, want)
		}
	}
	if got, want := sigString(syscall.Signal(33)), "signal 33"; got != want {
		t.Errorf("sigString(33) = %q, want %q", got, want)
	}
	if got, want := sigString(syscall.Signal(37)), "SIGRTMIN+3"; got != want {
		t.Errorf("sigString(37) = %q, want %q", got, want)
	}
}

// TestForwardedSignals: every catchable signal is forwarded (SIGPWR,
// SIGRTMIN+3 and the job-control signals included), except SIGCHLD, the
// fault signals, SIGPIPE and SIGURG (issue 7 item 14).
func TestForwardedSignals(t *testing.T) {
	t.Parallel()
	got := ForwardedSignals()
	for _, w := range []syscall.Signal{
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGALRM, syscall.SIGPWR,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGXCPU, syscall.SIGSTKFLT,
		syscall.Signal(35), syscall.Signal(37), syscall.Signal(64),
	} {
		if !slices.Contains(got, os.Signal(w)) {
			t.Errorf("ForwardedSignals() lacks %v", sigString(w))
		}
	}
	for _, n := range []syscall.Signal{
		syscall.SIGCHLD, syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGSEGV, syscall.SIGPIPE,
		syscall.SIGURG, syscall.SIGPROF, syscall.Signal(32), syscall.Signal(33), syscall.Signal(34), syscall.Signal(65),
	} {
		if slices.Contains(got, os.Signal(n)) {
			t.Errorf("ForwardedSignals() contains %v", sigString(n))
		}
	}
	if want := 31 - 13 + 30; len(got) != want { // 1..31 less 13, and 35..64
		t.Errorf("ForwardedSignals() has %d signals, want %d: %v", len(got), want, got)
	}
	got[0] = syscall.SIGKILL
	if again := ForwardedSignals(); again[0] != syscall.SIGHUP {
		t.Fatalf("ForwardedSignals() after modifying a previous result = %v", again)
	}
}
