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
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := m.store.Set(ctx, pendingPrefix+state, b, PendingTTL); err != nil {
		return fmt.Errorf("saving pending login: %w", err)
	}
	return nil
}

// Pending returns the login in progress for state, or ErrNotFound.
func (m *Manager) Pending(ctx context.Context, state string) (*Pending, error) {
	if !ValidState(state) {
		return nil, ErrNotFound
	}
	b, err := m.store.Get(ctx, pendingPrefix+state)
	if err != nil {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decoding pending login: %w", err)
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
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := m.store.Set(ctx, resultPrefix+state, b, ResultTTL); err != nil {
		return fmt.Errorf("saving login result: %w", err)
	}
	return nil
}

// Result returns the remembered outcome of state's callback, or ErrNotFound.
func (m *Manager) Result(ctx context.Context, state string) (*Result, error) {
	b, err := m.store.Get(ctx, resultPrefix+state)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding login result: %w", err)
	}
	return &r, nil
}

// Count returns the number of live sessions when the store can count them
// (the memory store), and -1 otherwise.
func (m *Manager) Count() int {
	if c, ok := m.store.(interface{ Count(string) int }); ok {
		return c.Count(sessionPrefix)
	}
	return -1
}
