package writer

import (
	"fmt"
	"os/user"
	"strconv"
)

// LookupUser returns the uid for s, a user name or a numeric id.
func LookupUser(s string) (int, error) {
	if id, ok := numericID(s); ok {
		return id, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("look up user %q: %w", s, err)
	}
	return parseID("user", s, u.Uid)
}

// LookupGroup returns the gid for s, a group name or a numeric id. Names are
// looked up in the group database, not the user database.
func LookupGroup(s string) (int, error) {
	if id, ok := numericID(s); ok {
		return id, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("look up group %q: %w", s, err)
	}
	return parseID("group", s, g.Gid)
}

// numericID accepts decimal ids that fit a uid_t.
func numericID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 { // (uid_t)-1 means "unchanged" to chown
		return 0, false
	}
	return int(n), true
}

func parseID(kind, name, id string) (int, error) {
	n, ok := numericID(id)
	if !ok {
		return 0, fmt.Errorf("look up %s %q: non-numeric id %q", kind, name, id)
	}
	return n, nil
}
