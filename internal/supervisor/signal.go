package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

type namedSignal struct {
	name string // without the "SIG" prefix
	sig  syscall.Signal
}

// signalNames lists the signals ParseSignal accepts, in numeric order on
// Linux (the system-specific ones last). It is a function rather than a
// package variable so that no caller can modify the table.
func signalNames() []namedSignal {
	return append([]namedSignal{
		{"HUP", syscall.SIGHUP},
		{"INT", syscall.SIGINT},
		{"QUIT", syscall.SIGQUIT},
		{"ILL", syscall.SIGILL},
		{"TRAP", syscall.SIGTRAP},
		{"ABRT", syscall.SIGABRT},
		{"BUS", syscall.SIGBUS},
		{"FPE", syscall.SIGFPE},
		{"KILL", syscall.SIGKILL},
		{"USR1", syscall.SIGUSR1},
		{"SEGV", syscall.SIGSEGV},
		{"USR2", syscall.SIGUSR2},
		{"PIPE", syscall.SIGPIPE},
		{"ALRM", syscall.SIGALRM},
		{"TERM", syscall.SIGTERM},
		{"CHLD", syscall.SIGCHLD},
		{"CONT", syscall.SIGCONT},
		{"STOP", syscall.SIGSTOP},
		{"TSTP", syscall.SIGTSTP},
		{"TTIN", syscall.SIGTTIN},
		{"TTOU", syscall.SIGTTOU},
		{"URG", syscall.SIGURG},
		{"XCPU", syscall.SIGXCPU},
		{"XFSZ", syscall.SIGXFSZ},
		{"VTALRM", syscall.SIGVTALRM},
		{"PROF", syscall.SIGPROF},
		{"WINCH", syscall.SIGWINCH},
		{"IO", syscall.SIGIO},
		{"SYS", syscall.SIGSYS},
	}, systemSignalNames()...)
}

// ParseSignal parses a signal given by name or number. Names are matched
// case-insensitively, with or without the "SIG" prefix: "SIGHUP", "HUP",
// "hup" and "1" all return SIGHUP. A number is accepted only if it is one
// of the named signals. Anything else returns an error that lists the
// valid names.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		for _, e := range signalNames() {
			if int(e.sig) == n {
				return e.sig, nil
			}
		}
		return 0, unknownSignal(s)
	}
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	for _, e := range signalNames() {
		if e.name == name {
			return e.sig, nil
		}
	}
	return 0, unknownSignal(s)
}

func unknownSignal(s string) error {
	table := signalNames()
	names := make([]string, len(table))
	for i, e := range table {
		names[i] = e.name
	}
	return fmt.Errorf("unknown signal %q; use one of %s", s, strings.Join(names, ", "))
}

// signalName returns the name of sig without the "SIG" prefix ("TERM",
// "RTMIN+3"), or its number for other signals.
func signalName(sig syscall.Signal) string {
	for _, e := range signalNames() {
		if e.sig == sig {
			return e.name
		}
	}
	if sig == sigRTMin {
		return "RTMIN"
	}
	if sig > sigRTMin && sig <= sigRTMax {
		return "RTMIN+" + strconv.Itoa(int(sig-sigRTMin))
	}
	return strconv.Itoa(int(sig))
}

// SignalString returns "SIGTERM", "SIGRTMIN+3", or "signal 33" for a
// signal without a name.
func SignalString(sig syscall.Signal) string { return sigString(sig) }

// Realtime signals as the C library numbers them: it keeps 32 and 33 for
// itself, so SIGRTMIN is 34.
const (
	sigRTMin = syscall.Signal(34)
	sigRTMax = syscall.Signal(64)
)

// ForwardedSignals returns the signals a supervising process should relay
// to its child: every signal a process can catch, including SIGTERM,
// SIGINT, SIGQUIT, the terminal job-control signals (SIGTSTP, SIGTTIN,
// SIGTTOU), SIGPWR and the realtime signals SIGRTMIN+1 to SIGRTMAX, except:
//
//   - SIGCHLD, which is about this process's own children;
//   - SIGKILL and SIGSTOP, which cannot be caught;
//   - the signals raised by faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
//     SIGTRAP, SIGSYS) and SIGABRT, which concern this process itself;
//   - SIGPIPE, which a write to a closed connection raises in this process;
//   - SIGURG, which the Go runtime sends itself to preempt goroutines and
//     which os/signal cannot tell apart from one sent by another process;
//   - SIGPROF, which the Go runtime keeps for its profiler and never
//     delivers to os/signal, and SIGRTMIN (34), which it does not let a
//     program catch (musl's SIGSYNCCALL, go.dev/issue/39343).
//
// The caller owns the returned slice.
func ForwardedSignals() []os.Signal {
	var out []os.Signal
	for sig := syscall.Signal(1); sig <= sigRTMax; sig++ {
		if forwarded(sig) {
			out = append(out, sig)
		}
	}
	return out
}

func forwarded(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGCHLD, syscall.SIGKILL, syscall.SIGSTOP,
		syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGABRT,
		syscall.SIGPIPE, syscall.SIGURG, syscall.SIGPROF:
		return false
	}
	return sig < 32 || sig > sigRTMin && sig <= sigRTMax
}

func sigString(sig syscall.Signal) string {
	name := signalName(sig)
	if _, err := strconv.Atoi(name); err == nil {
		return "signal " + name
	}
	return "SIG" + name
}
