package fault_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Child modes, the argument after the target directory.
const (
	modeServe      = "serve"       // exit 0 on TERM/INT
	modeDigest     = "digest"      // like serve, but print a digest instead of the contents
	modeIgnoreTerm = "ignore-term" // print TERM/INT but never exit on them
	modeKillSelf   = "kill-self"   // die by SIGKILL right after ready
	modeOrphan     = "orphan"      // leave an orphan "sleep 3599", then serve; exit 7 on USR2
	modeExitPrefix = "exit="       // "exit=N": exit with N right after ready
)

// orphanArg is the argument of the orphan's sleep, to find it in /proc.
const orphanArg = "3599"

// childMain is the child process of the tests: the test binary re-executed
// by dispenser. It prints "ready <state>" with what the target directory
// holds, then "<SIG> <state>" for each signal it receives, where state is
// state(dir) or, in digest mode, digest(dir). It exits 0 when its stdin
// reaches EOF, so that no child outlives its test.
func childMain(dir string, args []string) int {
	mode := args[0]
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	describe := func() string { return state(dir) }
	if mode == modeDigest {
		describe = func() string { return digest(dir) }
	}
	fmt.Printf("ready %s\n", describe())
	switch {
	case strings.HasPrefix(mode, modeExitPrefix):
		n, _ := strconv.Atoi(strings.TrimPrefix(mode, modeExitPrefix))
		return n
	case mode == modeKillSelf:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case mode == modeOrphan:
		// sh starts sleep in the background and exits: sleep is orphaned
		// and its parent becomes the nearest subreaper (or PID 1).
		if err := exec.Command("/bin/sh", "-c", "sleep "+orphanArg+" </dev/null >/dev/null 2>&1 &").Run(); err != nil {
			fmt.Printf("orphan failed: %v\n", err)
			return 1
		}
		fmt.Println("orphaned")
	}
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	for {
		select {
		case <-eof:
			return 0
		case s := <-sigs:
			fmt.Printf("%s %s\n", sigName(s), describe())
			switch {
			case s == syscall.SIGUSR2 && mode == modeOrphan:
				return 7
			case (s == syscall.SIGTERM || s == syscall.SIGINT) && mode != modeIgnoreTerm:
				return 0
			}
		}
	}
}

func sigName(s os.Signal) string {
	switch s {
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGUSR1:
		return "USR1"
	case syscall.SIGUSR2:
		return "USR2"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	}
	return s.String()
}

// files returns every file under dir as path → content, following
// symlinks as any reader would and skipping dispenser's "..*" entries.
func files(dir string) map[string]string {
	out := map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "..") {
				continue
			}
			p := filepath.Join(rel, e.Name())
			fi, err := os.Stat(filepath.Join(dir, p))
			switch {
			case err != nil:
			case fi.IsDir():
				walk(p)
			default:
				b, err := os.ReadFile(filepath.Join(dir, p))
				if err == nil {
					out[p] = string(b)
				}
			}
		}
	}
	walk("")
	return out
}

// state is files(dir) as "path=content" sorted and joined by ",".
func state(dir string) string { return format(files(dir)) }

// digest is files(dir) as "n=<count> sha=<hash>", for states too big to
// print.
func digest(dir string) string { return digestOf(files(dir)) }

func format(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func digestOf(m map[string]string) string {
	h := sha256.New()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%d\x00%s", k, len(m[k]), m[k])
	}
	return fmt.Sprintf("n=%d sha=%x", len(m), h.Sum(nil)[:8])
}
