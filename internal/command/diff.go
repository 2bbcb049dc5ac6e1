package command

import (
	"slices"
	"strings"
)

// Diff returns the commands of old that new drops (spec §4.4, §11.6), as two
// lists to run in ModeDiffRemove: before the change run of new, and after it
// (the old command has removeAfter).
//
// Matching is per scope by id; the k-th occurrence of an id in an old scope
// matches the k-th occurrence in the new scope. An old command is dropped
// when it has no match, when exactly one of the pair is a group, or when its
// change differs from the match's and the new command does not set
// changeIgnore. Groups present in both are compared recursively; a group is
// kept in the result, with only its dropped descendants, so parent ids stay
// intact. Dropped commands keep their old definition (check, remove, exec,
// removeAfter).
//
// Trigger entries are resolved in the old scope, where they were written.
// An entry is kept when some of its old targets are in the same returned
// list, where it then targets exactly those; otherwise it is dropped (an
// entry "a.b" whose exact target a.b was kept must not turn into the
// regexp a.b and hit axb). So both lists pass Validate and never trigger a
// command the old pattern did not target. Old and new are not modified.
func Diff(old, new Commands) (before, after Commands) {
	return dropped(old, new, false), dropped(old, new, true)
}

// dropped returns copies of the commands of the old scope that new drops
// and whose removeAfter equals after, keeping groups (whose own
// removeAfter is ignored) that hold any of them. A nil new drops the whole
// scope.
func dropped(old, new Commands, after bool) Commands {
	var out Commands
	var from []int // out[k] is a copy of old[from[k]]
	seen := map[string]int{}
	for i, o := range old {
		if o == nil {
			continue
		}
		k := seen[o.ID]
		seen[o.ID]++
		n := nthWithID(new, o.ID, k)
		var c *Command
		switch {
		case n == nil || o.IsGroup() != n.IsGroup():
			c = subset(o, nil, after)
		case o.IsGroup():
			c = subset(o, n.Commands, after)
		case o.Change != n.Change && !n.ChangeIgnore:
			c = subset(o, nil, after)
		}
		if c != nil {
			out = append(out, c)
			from = append(from, i)
		}
	}
	retarget(old, out, from)
	return out
}

// subset returns a copy of o if it is a command to drop (removeAfter equal
// to after), or of group o holding its descendants that newSub drops; nil
// when nothing is left.
func subset(o *Command, newSub Commands, after bool) *Command {
	if !o.IsGroup() {
		if o.RemoveAfter != after {
			return nil
		}
		cp := *o
		return &cp
	}
	sub := dropped(o.Commands, newSub, after)
	if len(sub) == 0 {
		return nil
	}
	g := *o
	g.Commands = sub
	return &g
}

func nthWithID(cs Commands, id string, k int) *Command {
	for _, c := range cs {
		if c != nil && c.ID == id {
			if k == 0 {
				return c
			}
			k--
		}
	}
	return nil
}

// retarget prunes, on the copies in out, the trigger lists of each out[k]
// (a copy of old[from[k]]): an entry stays if some command it targeted in
// old is in out, and then targets exactly those commands.
func retarget(old, out Commands, from []int) {
	pos := make(map[int]int, len(from)) // old index → out index
	for k, i := range from {
		pos[i] = k
	}
	for k, c := range out {
		c.OnChange = retargetEntries(old, from[k], out, k, pos, onChange, c.OnChange)
		c.OnFail = retargetEntries(old, from[k], out, k, pos, onFail, c.OnFail)
		c.OnRemove = retargetEntries(old, from[k], out, k, pos, onRemove, c.OnRemove)
	}
}

// retargetEntries returns the entries of old[i] (now out[k]) to keep.
func retargetEntries(old Commands, i int, out Commands, k int, pos map[int]int, kind triggerKind, entries []string) []string {
	var res []string
	for _, e := range entries {
		if strings.HasPrefix(e, EventPrefix) {
			res = append(res, e)
			continue
		}
		targets, err := resolve(old, i, e, kind)
		if err != nil {
			continue // old did not validate; nothing safe to keep
		}
		var want []int
		for _, j := range targets {
			if nj, ok := pos[j]; ok {
				want = append(want, nj)
			}
		}
		if len(want) == 0 {
			continue
		}
		// Within out, e resolves to exactly want: an exact id in old
		// targeted every in-range command with that id, and out keeps
		// their order; a regexp matched no id in old, so none in out.
		// Checked anyway, since a wrong target is worse than none.
		if got, err := resolve(out, k, e, kind); err == nil && slices.Equal(got, want) {
			res = append(res, e)
		}
	}
	return res
}
