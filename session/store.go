package session

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by a Store for a key it does not hold (never set,
// deleted, or expired).
var ErrNotFound = errors.New("session: not found")

// ErrUnavailable wraps every failure to reach a store (timeouts, a Redis
// that is down). It means "try again", never "logged out".
var ErrUnavailable = errors.New("session: store unavailable")

// Store holds opaque values by key with a time to live. Keys are chosen by
// the Manager and are never raw session IDs. Implementations must be safe for
// concurrent use. The memory store is the first implementation; Redis, for
// many replicas, is the second.
type Store interface {
	// Get returns the value of key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Set stores value under key for ttl.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// SetNX stores value under key for ttl only if key is absent, and
	// reports whether it did. It is what makes a state usable once across
	// concurrent callbacks.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Replace stores value under key for ttl only if key is present, and
	// reports whether it did. Updates of sessions and token families use it
	// so that a write racing a logout or revocation (which delete the key)
	// cannot bring the login back.
	Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Swap stores value under key for ttl only if key still holds old (a
	// value Get returned), and reports whether it did. A session's
	// once-a-minute touch uses it, so that it never undoes a write made
	// since its read, such as a refreshed WeChat token.
	Swap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error

	// AddMember lists member in the set at key until until (a later time
	// than it had; never an earlier one), first dropping the members whose
	// time is not after now, and keeps the set as long as its latest member.
	// Sets index a person's sessions and token families, for revoking them
	// all; a member's time must be no earlier than the end of what it names,
	// or a revocation would miss it. If the set then holds more than limit
	// members (0: no limit), AddMember returns the surplus, nearest their
	// end first and never member itself, and leaves them listed: the caller
	// ends each and then removes it, so a login that failed to end is still
	// listed. Both operations cost O(log n) for a set of n, plus O(log n)
	// per member dropped or returned.
	AddMember(ctx context.Context, key, member string, until, now time.Time, limit int) (over []string, err error)
	// Members returns the members of the set at key (none if absent). Some
	// may have ended since they were added.
	Members(ctx context.Context, key string) ([]string, error)
	// RemoveMember removes member from the set at key.
	RemoveMember(ctx context.Context, key, member string) error
}
