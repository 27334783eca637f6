package session

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
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
	// Handoff, for a login started on another host than the auth host, is
	// the Hash of the binding cookie of the browser there: the one-time
	// ticket that hands the login back is bound to it (Ticket.Binding).
	Handoff string `json:"handoff,omitempty"`
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
	b, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("saving pending login: %w", err)
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
	if err := p.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("decoding pending login: %w", err)
	}
	return &p, nil
}

// A pending login is stored in a compact binary form, because a server
// holds one for every login started in the last PendingTTL, most of which
// a flood of /start would create: 44 bytes and the return URL, against
// about 170 and the return URL as JSON.
//
//	byte 0      format version (1)
//	byte 1      scope (index in pendingScopes)
//	byte 2      flow (index in pendingFlows)
//	byte 3      attempt
//	bytes 4-11  created, Unix seconds, big-endian
//	bytes 12-43 binding: the 32 bytes of the Hash
//	bytes 44-   return URL
//
// Version 2, for a login with a Handoff, puts the 32 bytes of its Hash
// between the head and the return URL. Version 1 is still written for the
// others, so that replicas not yet upgraded read them.
const (
	pendingVersion  = 1
	pendingVersion2 = 2
	pendingHead     = 44
)

var (
	pendingScopes = []string{"snsapi_base", "snsapi_userinfo", "snsapi_login"}
	pendingFlows  = []string{"oa", "qr"}
)

// MarshalBinary encodes p in the compact form SavePending stores.
func (p *Pending) MarshalBinary() ([]byte, error) {
	scope, flow := slices.Index(pendingScopes, p.Scope), slices.Index(pendingFlows, p.Flow)
	if scope < 0 {
		return nil, fmt.Errorf("pending login: unknown scope %q", p.Scope)
	}
	if flow < 0 {
		return nil, fmt.Errorf("pending login: unknown flow %q", p.Flow)
	}
	if p.Attempt < 0 || p.Attempt > 255 {
		return nil, fmt.Errorf("pending login: attempt %d out of range", p.Attempt)
	}
	binding, err := base64.RawURLEncoding.DecodeString(p.Binding)
	if err != nil || len(binding) != 32 {
		return nil, fmt.Errorf("pending login: binding is not a Hash")
	}
	version := byte(pendingVersion)
	var handoff []byte
	if p.Handoff != "" {
		version = pendingVersion2
		if handoff, err = base64.RawURLEncoding.DecodeString(p.Handoff); err != nil || len(handoff) != 32 {
			return nil, fmt.Errorf("pending login: handoff is not a Hash")
		}
	}
	b := make([]byte, pendingHead, pendingHead+len(handoff)+len(p.ReturnURL))
	b[0], b[1], b[2], b[3] = version, byte(scope), byte(flow), byte(p.Attempt)
	binary.BigEndian.PutUint64(b[4:12], uint64(p.Created.Unix()))
	copy(b[12:44], binding)
	b = append(b, handoff...)
	return append(b, p.ReturnURL...), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded. It also reads the
// JSON form of earlier versions, so that logins in flight survive an
// upgrade.
func (p *Pending) UnmarshalBinary(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, p)
	}
	head := pendingHead
	if len(b) > 0 && b[0] == pendingVersion2 {
		head += 32
	}
	if len(b) < head || (b[0] != pendingVersion && b[0] != pendingVersion2) || int(b[1]) >= len(pendingScopes) || int(b[2]) >= len(pendingFlows) {
		return fmt.Errorf("pending login: malformed record of %d bytes", len(b))
	}
	*p = Pending{
		Scope:     pendingScopes[b[1]],
		Flow:      pendingFlows[b[2]],
		Attempt:   int(b[3]),
		Created:   time.Unix(int64(binary.BigEndian.Uint64(b[4:12])), 0),
		Binding:   base64.RawURLEncoding.EncodeToString(b[12:44]),
		ReturnURL: string(b[head:]),
	}
	if head > pendingHead {
		p.Handoff = base64.RawURLEncoding.EncodeToString(b[pendingHead:head])
	}
	return nil
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
