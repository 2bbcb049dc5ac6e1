package command

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DefaultCommand is the interpreter of the main exec when none is set
// (spec §2.9). The script is appended to it as one final argument.
const DefaultCommand = "/usr/bin/bash -e -o pipefail -c"

// Layer is one named layer of an exec override chain.
type Layer struct {
	// Name says where the layer is configured, for messages: "exec",
	// "sources.<name>.exec", "runExec", "buildExec", ...
	Name string
	// Exec is the layer; nil means absent.
	Exec *Exec
}

// MergeExec computes the effective exec of an override chain, outermost
// layer first: main exec, source exec, pattern runExec/buildExec, ... (spec
// §2.9). layers[0] is the main exec; it is merged onto the main defaults
// {allowOverride: true, command: DefaultCommand}. Nil or empty layers are
// skipped. Each later layer is merged only if the effective exec so far
// allows overrides; after merging, the layer's own allowOverride (absent =
// false) decides for the next one. The first refused layer stops the chain
// and yields a warning naming it and the layer that refused it.
//
// A refused layer that asks for a container (containerImage) is an error,
// not a warning: running its scripts on the host instead would be a
// surprise. An applied containerImage is returned in the Exec; Run refuses
// it, since container execs are not supported yet.
//
// Merging: every non-zero scalar field of the layer replaces the current
// value; env maps are merged key-wise with the layer winning. The returned
// Exec always has a non-nil AllowOverride and shares no maps or slices with
// the layers.
func MergeExec(layers ...Layer) (Exec, []string, error) {
	eff := Exec{AllowOverride: boolPtr(true), Command: DefaultCommand}
	if len(layers) == 0 {
		return eff, nil, nil
	}
	mergeExec(&eff, layers[0].Exec)
	last := layerName(layers[0], "exec")
	var warnings []string
	for i, l := range layers[1:] {
		name := layerName(l, fmt.Sprintf("exec layer %d", i+1))
		next, ok := overrideExec(eff, l.Exec)
		if !ok {
			if err := refusedContainer(name, last, l.Exec); err != nil {
				return eff, warnings, err
			}
			warnings = append(warnings, fmt.Sprintf(
				"%s ignored with all later exec layers: %s does not allow overrides; set allowOverride: true on %s to use it", name, last, last))
			break
		}
		if !execEmpty(l.Exec) {
			last = name
		}
		eff = next
	}
	return eff, warnings, nil
}

func layerName(l Layer, def string) string {
	if l.Name != "" {
		return l.Name
	}
	return def
}

// refusedContainer returns an error if the refused layer l (named name,
// refused by the layer named by) asks for a container.
func refusedContainer(name, by string, l *Exec) error {
	if l == nil || l.ContainerImage == "" {
		return nil
	}
	return fmt.Errorf("%s asks for container image %q but %s does not allow overrides, and container execs are not supported yet; remove containerImage from %s",
		name, l.ContainerImage, by, name)
}

// overrideExec applies one non-main layer to eff. It returns false, and eff
// unchanged, when eff forbids overrides and the layer is not empty.
func overrideExec(eff Exec, l *Exec) (Exec, bool) {
	if execEmpty(l) {
		return eff, true
	}
	if eff.AllowOverride == nil || !*eff.AllowOverride {
		return eff, false
	}
	mergeExec(&eff, l)
	eff.AllowOverride = boolPtr(l.AllowOverride != nil && *l.AllowOverride)
	return eff, true
}

func mergeExec(dst *Exec, l *Exec) {
	if l == nil {
		return
	}
	if l.AllowOverride != nil {
		dst.AllowOverride = boolPtr(*l.AllowOverride)
	}
	setStr(&dst.Command, l.Command)
	setStr(&dst.ContainerEntrypoint, l.ContainerEntrypoint)
	setStr(&dst.ContainerImage, l.ContainerImage)
	setStr(&dst.ContainerNetwork, l.ContainerNetwork)
	setStr(&dst.ContainerPull, l.ContainerPull)
	setStr(&dst.ContainerUser, l.ContainerUser)
	setStr(&dst.ContainerWorkDir, l.ContainerWorkDir)
	setStr(&dst.Group, l.Group)
	setStr(&dst.User, l.User)
	setStr(&dst.WorkDir, l.WorkDir)
	dst.ContainerPrivileged = dst.ContainerPrivileged || l.ContainerPrivileged
	dst.EnvInherit = dst.EnvInherit || l.EnvInherit
	dst.Sudo = dst.Sudo || l.Sudo
	if len(l.ContainerVolumes) > 0 {
		dst.ContainerVolumes = slices.Clone(l.ContainerVolumes)
	}
	if len(l.Env) > 0 {
		env := maps.Clone(dst.Env)
		if env == nil {
			env = make(map[string]string, len(l.Env))
		}
		maps.Copy(env, l.Env)
		dst.Env = env
	}
}

func setStr(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func boolPtr(b bool) *bool { return &b }

// execEmpty reports whether l sets nothing at all.
func execEmpty(l *Exec) bool {
	if l == nil {
		return true
	}
	probe := Exec{}
	mergeExec(&probe, l)
	return probe.AllowOverride == nil && probe.Command == "" && probe.ContainerEntrypoint == "" &&
		probe.ContainerImage == "" && probe.ContainerNetwork == "" && probe.ContainerPull == "" &&
		probe.ContainerUser == "" && probe.ContainerWorkDir == "" && probe.Group == "" &&
		probe.User == "" && probe.WorkDir == "" && !probe.ContainerPrivileged && !probe.EnvInherit &&
		!probe.Sudo && len(probe.ContainerVolumes) == 0 && len(probe.Env) == 0
}

// argv builds the argument vector for script under e (spec §2.9): the words
// of e.Command followed by the script as one argument, or, when e.Command is
// empty, the words of the script itself. With e.Sudo and a non-zero euid it
// is prefixed with "sudo -E".
func argv(e Exec, script string, euid int) ([]string, error) {
	var args []string
	if e.Command == "" {
		words, err := SplitWords(script)
		if err != nil {
			return nil, fmt.Errorf("split script (exec.command is empty): %w", err)
		}
		args = words
	} else {
		words, err := SplitWords(e.Command)
		if err != nil {
			return nil, fmt.Errorf("split exec.command %q: %w", e.Command, err)
		}
		args = append(words, script)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("nothing to run: exec.command and the script are both blank")
	}
	if e.Sudo && euid != 0 {
		args = append([]string{"sudo", "-E"}, args...)
	}
	return args, nil
}

// SplitWords splits s (an exec.command, or a script run without an
// interpreter) into argv words like a POSIX shell does, without any
// expansion: blanks separate words, single quotes keep everything literal,
// double quotes keep everything but \\, \", \$, \` and \<newline> literal,
// and a backslash outside quotes escapes the next character.
func SplitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing backslash in %q", s)
			}
			i++
			if s[i] != '\n' {
				cur.WriteByte(s[i])
				inWord = true
			}
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case ch == '"':
			n, err := doubleQuoted(s[i+1:], &cur)
			if err != nil {
				return nil, fmt.Errorf("%w in %q", err, s)
			}
			i += n + 1
			inWord = true
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// doubleQuoted copies the body of a double-quoted string from s (which
// starts after the opening quote) into b and returns the index of the
// closing quote in s.
func doubleQuoted(s string, b *strings.Builder) (int, error) {
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '"':
			return i, nil
		case ch == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`\n", s[i+1]) >= 0:
			i++
			if s[i] != '\n' {
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(ch)
		}
	}
	return 0, fmt.Errorf("unterminated double quote")
}
