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
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error

	// AddMember adds member to the set at key and keeps the set at least
	// ttl. Sets index sessions by user, for revoking them all.
	AddMember(ctx context.Context, key, member string, ttl time.Duration) error
	// Members returns the members of the set at key (none if absent).
	Members(ctx context.Context, key string) ([]string, error)
	// RemoveMember removes member from the set at key.
	RemoveMember(ctx context.Context, key, member string) error
}
