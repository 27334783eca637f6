package session

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Lease is a claim that every replica honours through the store: at most
// one holds it at a time, until it is released or its time runs out. It
// carries a short state, which the others may read.
type Lease struct {
	store Store
	key   string
}

// RefreshLease is the lease on the WeChat token refresh of login ("s:"+a
// session's Key, or "f:"+a token family's ID): the replica that holds it
// refreshes, or holds it for a backoff after a failure (issue 9).
func (m *Manager) RefreshLease(login string) Lease {
	return Lease{store: m.store, key: "lease:sns:" + login}
}

// Take takes the lease with state for ttl if no one holds it, and reports
// whether it did.
func (l Lease) Take(ctx context.Context, state string, ttl time.Duration) (bool, error) {
	return l.store.SetNX(ctx, l.key, []byte(state), ttl)
}

// Hold sets the lease's state and time, whoever held it.
func (l Lease) Hold(ctx context.Context, state string, ttl time.Duration) error {
	return l.store.Set(ctx, l.key, []byte(state), ttl)
}

// State returns the state of the held lease, or ErrNotFound when no one
// holds it.
func (l Lease) State(ctx context.Context) (string, error) {
	b, err := l.store.Get(ctx, l.key)
	return string(b), err
}

// Release lets the lease go.
func (l Lease) Release(ctx context.Context) error { return l.store.Delete(ctx, l.key) }

// Shared is a part of the store other packages keep their own shared state
// in, every key under one prefix: the WeChat app-token holders'
// ("apptoken:"). It has the methods wechat.SharedStore needs.
type Shared struct {
	store  Store
	prefix string
}

// Shared returns the part of the store under prefix.
func (m *Manager) Shared(prefix string) Shared { return Shared{store: m.store, prefix: prefix} }

func (s Shared) check(key string) error {
	if !strings.HasPrefix(key, s.prefix) {
		return fmt.Errorf("session: key %q is outside %q", key, s.prefix)
	}
	return nil
}

// Get returns the value of key, or ErrNotFound.
func (s Shared) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(key); err != nil {
		return nil, err
	}
	return s.store.Get(ctx, key)
}

// Set stores value under key for ttl.
func (s Shared) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.check(key); err != nil {
		return err
	}
	return s.store.Set(ctx, key, value, ttl)
}

// SetNX stores value under key for ttl if key is absent, and reports
// whether it did.
func (s Shared) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := s.check(key); err != nil {
		return false, err
	}
	return s.store.SetNX(ctx, key, value, ttl)
}

// Delete removes key.
func (s Shared) Delete(ctx context.Context, key string) error {
	if err := s.check(key); err != nil {
		return err
	}
	return s.store.Delete(ctx, key)
}
