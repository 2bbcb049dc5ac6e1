package command

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
// removeAfter). Trigger entries that no longer resolve inside the returned
// lists are pruned, so both lists pass Validate. Old and new are not
// modified.
func Diff(old, new Commands) (before, after Commands) {
	dropped := diffScope(old, new)
	return prune(splitAfter(dropped, false)), prune(splitAfter(dropped, true))
}

func diffScope(old, new Commands) Commands {
	var out Commands
	seen := map[string]int{}
	for _, o := range old {
		if o == nil {
			continue
		}
		k := seen[o.ID]
		seen[o.ID]++
		n := nthWithID(new, o.ID, k)
		switch {
		case n == nil || o.IsGroup() != n.IsGroup():
			out = append(out, o)
		case o.IsGroup():
			if sub := diffScope(o.Commands, n.Commands); len(sub) > 0 {
				g := *o
				g.Commands = sub
				out = append(out, &g)
			}
		case o.Change != n.Change && !n.ChangeIgnore:
			out = append(out, o)
		}
	}
	return out
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

// splitAfter returns copies of the commands whose RemoveAfter equals after,
// keeping groups (whose own RemoveAfter is ignored) that hold any of them.
func splitAfter(cs Commands, after bool) Commands {
	var out Commands
	for _, c := range cs {
		switch {
		case c.IsGroup():
			if sub := splitAfter(c.Commands, after); len(sub) > 0 {
				g := *c
				g.Commands = sub
				out = append(out, &g)
			}
		case c.RemoveAfter == after:
			cp := *c
			out = append(out, &cp)
		}
	}
	return out
}

// prune drops, in place, trigger entries that do not resolve within their
// scope. cs must hold copies owned by the caller.
func prune(cs Commands) Commands {
	for i, c := range cs {
		c.OnChange = keepResolvable(cs, i, onChange, c.OnChange)
		c.OnFail = keepResolvable(cs, i, onFail, c.OnFail)
		c.OnRemove = keepResolvable(cs, i, onRemove, c.OnRemove)
		if c.IsGroup() {
			prune(c.Commands)
		}
	}
	return cs
}

func keepResolvable(scope Commands, i int, kind triggerKind, entries []string) []string {
	var out []string
	for _, e := range entries {
		if _, err := resolve(scope, i, e, kind); err == nil {
			out = append(out, e)
		}
	}
	return out
}
