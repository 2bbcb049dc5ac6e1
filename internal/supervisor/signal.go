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
// Linux. It is a function rather than a package variable so that no caller
// can modify the table.
func signalNames() []namedSignal {
	return []namedSignal{
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
	}
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

// signalName returns the name of sig without the "SIG" prefix ("TERM"), or
// its number for signals ParseSignal does not know.
func signalName(sig syscall.Signal) string {
	for _, e := range signalNames() {
		if e.sig == sig {
			return e.name
		}
	}
	return strconv.Itoa(int(sig))
}

// ForwardedSignals returns the signals a supervising process should relay
// to its child: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
// SIGWINCH, SIGCONT and SIGALRM. The caller owns the returned slice.
func ForwardedSignals() []os.Signal {
	return []os.Signal{
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT,
		syscall.SIGALRM,
	}
}

// sigString returns "SIGTERM" for known signals and "signal 34" otherwise.
func sigString(sig syscall.Signal) string {
	name := signalName(sig)
	if _, err := strconv.Atoi(name); err == nil {
		return "signal " + name
	}
	return "SIG" + name
}
