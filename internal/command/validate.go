package command

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// EventPrefix marks a trigger entry that emits an event instead of
// triggering a command (spec §4.6).
const EventPrefix = "etcha:"

var envPrefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the rules of spec §2.4 and §11.4 in every scope and
// returns all violations joined (errors.Join), or nil. Each error names the
// command and says what to change:
//   - ids are non-empty;
//   - envPrefix matches ^[A-Za-z_][A-Za-z0-9_]*$;
//   - onChange and onFail targets are later siblings, onRemove targets are
//     earlier siblings, in the same scope; a command never targets itself;
//   - a target is resolved by exact id first, else as a fully anchored Go
//     regexp; it must match at least one sibling and no group;
//   - "etcha:<name>" entries are events and need a non-empty name.
func (c Commands) Validate() error {
	var errs []error
	validateScope(c, "", &errs)
	return errors.Join(errs...)
}

func validateScope(scope Commands, parent string, errs *[]error) {
	for i, cmd := range scope {
		name := cmdName(cmd, i, parent)
		if cmd == nil {
			*errs = append(*errs, fmt.Errorf("%s is null; remove it", name))
			continue
		}
		if cmd.ID == "" {
			*errs = append(*errs, fmt.Errorf("%s: id is empty; set a non-empty id", name))
		}
		if cmd.EnvPrefix != "" && !envPrefixRE.MatchString(cmd.EnvPrefix) {
			*errs = append(*errs, fmt.Errorf("%s: envPrefix %q is invalid; use letters, digits and _ only, not starting with a digit", name, cmd.EnvPrefix))
		}
		for _, tl := range triggerLists(cmd) {
			for _, e := range tl.entries {
				if _, err := resolve(scope, i, e, tl.kind); err != nil {
					*errs = append(*errs, fmt.Errorf("%s: %w", name, err))
				}
			}
		}
		if cmd.IsGroup() {
			validateScope(cmd.Commands, cmd.ID, errs)
		}
	}
}

// cmdName names a command in errors: by id, or by position when it has none.
func cmdName(cmd *Command, i int, parent string) string {
	if cmd != nil && cmd.ID != "" {
		return fmt.Sprintf("command %q", cmd.ID)
	}
	if parent == "" {
		return fmt.Sprintf("command #%d of the top-level list", i+1)
	}
	return fmt.Sprintf("command #%d in group %q", i+1, parent)
}

type triggerKind string

const (
	onChange triggerKind = "onChange"
	onFail   triggerKind = "onFail"
	onRemove triggerKind = "onRemove"
)

type triggerList struct {
	kind    triggerKind
	entries []string
}

func triggerLists(c *Command) []triggerList {
	return []triggerList{{onChange, c.OnChange}, {onFail, c.OnFail}, {onRemove, c.OnRemove}}
}

// resolve returns the scope indexes that entry e of scope[i] targets, in
// list order. Events return nil. onChange/onFail look at later siblings,
// onRemove at earlier ones (spec §2.4, §11.4).
func resolve(scope Commands, i int, e string, kind triggerKind) ([]int, error) {
	if name, ok := strings.CutPrefix(e, EventPrefix); ok {
		if name == "" {
			return nil, fmt.Errorf("%s entry %q has no event name; write etcha:<name>", kind, e)
		}
		return nil, nil
	}
	self := scope[i]
	if e == self.ID {
		return nil, fmt.Errorf("%s target %q is the command itself; a command cannot trigger itself", kind, e)
	}
	where := "after"
	if kind == onRemove {
		where = "before"
	}
	var exact bool
	var matches []int
	for j, o := range scope {
		if o != nil && o.ID == e {
			exact = true
			if inRange(i, j, kind) {
				matches = append(matches, j)
			}
		}
	}
	if !exact {
		re, err := regexp.Compile("^(?:" + e + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s target %q is neither a sibling id nor a valid regexp: %w", kind, e, err)
		}
		for j, o := range scope {
			if o != nil && j != i && inRange(i, j, kind) && re.MatchString(o.ID) {
				matches = append(matches, j)
			}
		}
	}
	if len(matches) == 0 {
		return nil, fmt.Errorf("%s target %q not found %s it in the same command list; targets must be %s siblings",
			kind, e, where, map[bool]string{true: "earlier", false: "later"}[kind == onRemove])
	}
	for _, j := range matches {
		if scope[j].IsGroup() {
			return nil, fmt.Errorf("%s target %q matches group %q; groups cannot be targets, target a command inside the group from a sibling there", kind, e, scope[j].ID)
		}
	}
	return matches, nil
}

func inRange(i, j int, kind triggerKind) bool {
	if kind == onRemove {
		return j < i
	}
	return j > i
}
