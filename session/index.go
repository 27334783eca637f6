package session

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultMaxLoginsPerUser is the default of [session] max_logins_per_user.
const DefaultMaxLoginsPerUser = 100

// indexLogin lists a login (member "s:"+session key or "f:"+family ID,
// which ends at the latest at until) in the index of each of id's users
// (userIndex), and ends the logins this one pushes beyond limit in an
// index: those nearest their end (issue 9: one person's index grew with
// every login). A login is ended before it leaves the index, so one that
// could not be ended stays listed for the next login or an admin's
// revocation to find: nothing alive is ever missing from its person's
// index. capped, if not nil, hears of each login ended, by kind.
func indexLogin(ctx context.Context, store Store, id *Identity, member string, until, now time.Time, limit int, capped func(kind string)) error {
	var ended []string // by the openid's index, so not again by the unionid's
	for _, u := range [...]string{id.OpenID, id.UnionID} {
		if u == "" {
			continue
		}
		key := userIndex(u)
		over, err := store.AddMember(ctx, key, member, until, now, limit)
		if err != nil {
			return err
		}
		for _, o := range over {
			if !slices.Contains(ended, o) {
				if err := endLogin(ctx, store, o); err != nil {
					return fmt.Errorf("ending a login beyond max_logins_per_user: %w", err)
				}
				ended = append(ended, o)
				if capped != nil {
					capped(loginKind(o))
				}
			}
			if err := store.RemoveMember(ctx, key, o); err != nil {
				return fmt.Errorf("ending a login beyond max_logins_per_user: %w", err)
			}
		}
	}
	return nil
}

// loginKind names the kind of login a user index member is, as the admin
// API does.
func loginKind(member string) string {
	switch {
	case strings.HasPrefix(member, "s:"):
		return "session"
	case strings.HasPrefix(member, "f:"):
		return "token_family"
	}
	return "other"
}

// endLogin ends the session or token family a user index member names, as
// logout and revocation do: by deleting it. A session's entry in the token
// index is left to the sweeper, which forgets ended sessions.
func endLogin(ctx context.Context, store Store, member string) error {
	kind, id, _ := strings.Cut(member, ":")
	switch kind {
	case "s":
		return store.Delete(ctx, sessionPrefix+id)
	case "f":
		return store.Delete(ctx, familyPrefix+id)
	}
	return nil
}

// Login is one of a person's logins, as their index lists it.
type Login struct {
	// Kind is "session" or "token_family".
	Kind string
	// ID is the session's Key or the token family's ID.
	ID string
	// member is its entry in the index.
	member string
}

// Logins lists the logins indexed under user (an openid or unionid); some
// may have ended since, which Unlist then removes.
func (m *Manager) Logins(ctx context.Context, user string) ([]Login, error) {
	members, err := m.store.Members(ctx, userIndex(user))
	if err != nil {
		return nil, err
	}
	logins := make([]Login, 0, len(members))
	for _, mb := range members {
		_, id, _ := strings.Cut(mb, ":")
		logins = append(logins, Login{Kind: loginKind(mb), ID: id, member: mb})
	}
	return logins, nil
}

// Unlist removes an ended login from user's index.
func (m *Manager) Unlist(ctx context.Context, user string, l Login) error {
	return m.store.RemoveMember(ctx, userIndex(user), l.member)
}
