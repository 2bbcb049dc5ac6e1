package supervisor

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// LookupCredential returns the credentials for Options.Credential from spec,
// "USER" or "USER:GROUP", each a name or a numeric id, the way gosu and
// su-exec drop privileges:
//
//   - "USER": the user's uid, its primary gid from the user database, and
//     as supplementary groups every group the user is a member of (its
//     primary group included).
//   - "USER:GROUP": the user's uid, GROUP as the gid and the only
//     supplementary group; the user's other groups are dropped.
//
// A numeric USER without a database entry is accepted only with a GROUP,
// since its primary group is unknown; a numeric GROUP needs no entry. An
// unknown name, an empty part or a malformed spec returns a one-line error
// that says what to change.
func LookupCredential(spec string) (*syscall.Credential, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || (hasGroup && group == "") {
		return nil, fmt.Errorf("%q is not USER or USER:GROUP; give e.g. postgres or postgres:ssl-cert", spec)
	}
	u, err := lookupUser(name)
	if err != nil {
		return nil, err
	}
	if hasGroup {
		gid, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		return &syscall.Credential{Uid: u.uid, Gid: gid, Groups: []uint32{gid}}, nil
	}
	if u.entry == nil {
		return nil, fmt.Errorf("user %s has no entry in the user database, so its group is unknown; give one as %s:GID", name, name)
	}
	gid, err := parseID(u.entry.Gid)
	if err != nil {
		return nil, fmt.Errorf("user %s: primary group id %q is not numeric", name, u.entry.Gid)
	}
	ids, err := u.entry.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("list the groups of user %s: %w", name, err)
	}
	groups := []uint32{gid}
	for _, s := range ids {
		id, err := parseID(s)
		if err != nil {
			return nil, fmt.Errorf("user %s: group id %q is not numeric", name, s)
		}
		if id != gid {
			groups = append(groups, id)
		}
	}
	return &syscall.Credential{Uid: u.uid, Gid: gid, Groups: groups}, nil
}

// foundUser is a uid and its database entry, nil for a numeric uid that
// has none.
type foundUser struct {
	uid   uint32
	entry *user.User
}

func lookupUser(s string) (foundUser, error) {
	if id, err := parseID(s); err == nil {
		u, err := user.LookupId(s)
		if err != nil {
			u = nil // a bare uid is fine, as in a scratch image without /etc/passwd
		}
		return foundUser{uid: id, entry: u}, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		if errors.As(err, new(user.UnknownUserError)) {
			return foundUser{}, fmt.Errorf("no user %q in the user database; give an existing user name or a numeric uid", s)
		}
		return foundUser{}, fmt.Errorf("look up user %q: %w", s, err)
	}
	id, err := parseID(u.Uid)
	if err != nil {
		return foundUser{}, fmt.Errorf("user %s: uid %q is not numeric", s, u.Uid)
	}
	return foundUser{uid: id, entry: u}, nil
}

func lookupGroup(s string) (uint32, error) {
	if id, err := parseID(s); err == nil {
		return id, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		if errors.As(err, new(user.UnknownGroupError)) {
			return 0, fmt.Errorf("no group %q in the group database; give an existing group name or a numeric gid", s)
		}
		return 0, fmt.Errorf("look up group %q: %w", s, err)
	}
	id, err := parseID(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %s: gid %q is not numeric", s, g.Gid)
	}
	return id, nil
}

// parseID accepts a decimal id that fits an id_t, except (id_t)-1, which
// the kernel reads as "unchanged".
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(n), nil
}
