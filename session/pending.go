package session

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"time"
)

// Lifetimes of a login in progress (DESIGN.md "Browser sessions").
const (
	PendingTTL = 10 * time.Minute // a state is valid this long
	ResultTTL  = 5 * time.Minute  // a callback's outcome is remembered this long
)

// Pending is a login in progress, stored under its state.
type Pending struct {
	// ReturnURL is where the browser goes after the login (validated rd).
	ReturnURL string `json:"rd"`
	// Scope is the WeChat scope asked for: snsapi_base or snsapi_userinfo.
	Scope string `json:"scope"`
	// Flow is "oa" (official account) or "qr" (website QR login).
	Flow string `json:"flow"`
	// Binding is the Hash of the browser's binding cookie: a state is only
	// accepted from the browser that started it.
	Binding string `json:"binding"`
	// Attempt counts automatic restarts after a bad code (at most one).
	Attempt int       `json:"attempt"`
	Created time.Time `json:"created"`
}

// BoundTo reports whether the binding cookie value belongs to p.
func (p *Pending) BoundTo(cookie string) bool {
	if !ValidID(cookie) {
		return false
	}
	return hmac.Equal([]byte(Hash(cookie)), []byte(p.Binding))
}

// Result is the remembered outcome of a state's callback.
type Result struct {
	// SessionHash is the Hash of the session the callback created.
	SessionHash string `json:"session"`
	ReturnURL   string `json:"rd"`
}

// SavePending stores p under state for PendingTTL.
func (m *Manager) SavePending(ctx context.Context, state string, p *Pending) error {
	p.Created = m.Now()
	return m.put(ctx, "saving pending login", pendingPrefix+state, p, PendingTTL)
}

// Pending returns the login in progress for state, or ErrNotFound.
func (m *Manager) Pending(ctx context.Context, state string) (*Pending, error) {
	if !ValidState(state) {
		return nil, ErrNotFound
	}
	var p Pending
	if err := m.get(ctx, "pending login", pendingPrefix+state, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Claim marks state as used and reports whether this caller was the first.
// Only the first caller may redeem the state's code.
func (m *Manager) Claim(ctx context.Context, state string) (bool, error) {
	ok, err := m.store.SetNX(ctx, claimPrefix+state, []byte{1}, PendingTTL)
	if err != nil {
		return false, fmt.Errorf("claiming state: %w", err)
	}
	return ok, nil
}

// SaveResult remembers the outcome of state's callback for ResultTTL.
func (m *Manager) SaveResult(ctx context.Context, state string, r *Result) error {
	return m.put(ctx, "saving login result", resultPrefix+state, r, ResultTTL)
}

// Result returns the remembered outcome of state's callback, or ErrNotFound.
func (m *Manager) Result(ctx context.Context, state string) (*Result, error) {
	var r Result
	if err := m.get(ctx, "login result", resultPrefix+state, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Count returns the number of live sessions when the store can count them
// (the memory store), and -1 otherwise.
func (m *Manager) Count() int {
	s := m.store
	for {
		if c, ok := s.(interface{ Count(string) int }); ok {
			return c.Count(sessionPrefix)
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			return -1
		}
		s = u.Unwrap()
	}
}

func (m *Manager) put(ctx context.Context, action, key string, v any, ttl time.Duration) error {
	return putJSON(ctx, m.store, action, key, v, ttl)
}

func (m *Manager) get(ctx context.Context, what, key string, v any) error {
	return getJSON(ctx, m.store, what, key, v)
}

// putJSON stores v as JSON under key for ttl.
func putJSON(ctx context.Context, s Store, action, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	if err := s.Set(ctx, key, b, ttl); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// getJSON decodes the JSON under key into v; ErrNotFound passes through.
func getJSON(ctx context.Context, s Store, what, key string, v any) error {
	b, err := s.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	return nil
}
