// Package session keeps browser sessions and pending logins on the server.
// Browsers hold only an opaque random ID; stores key everything by a hash
// of it. It knows nothing of HTTP: proxy reads and sets the cookies.
package session

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wxgate/wxgate/internal/secret"
)

// Identity is who a session or token belongs to.
type Identity struct {
	OpenID  string `json:"openid"`
	UnionID string `json:"unionid,omitempty"`
	AppID   string `json:"appid"`
	// Scope is how the identity was obtained: snsapi_base, snsapi_userinfo,
	// snsapi_login, miniprogram or app.
	Scope    string `json:"scope"`
	Nickname string `json:"nickname,omitempty"`
	Avatar   string `json:"avatar,omitempty"`
	Phone    string `json:"phone,omitempty"`
}

// User is the identity's stable key: the unionid when known, else the openid
// (the X-Forwarded-User value).
func (id *Identity) User() string {
	if id.UnionID != "" {
		return id.UnionID
	}
	return id.OpenID
}

// Tokens are a session's WeChat user tokens. They never leave the server
// unless a route sets pass_wechat_token.
type Tokens struct {
	AccessToken      secret.Secret `json:"access_token"`
	ExpiresAt        time.Time     `json:"expires_at"`
	RefreshToken     secret.Secret `json:"refresh_token"`
	RefreshExpiresAt time.Time     `json:"refresh_expires_at"`
	// Failures counts the refreshes that failed in a row (WeChat down);
	// RetryAt is when the next may start. A success clears both. The store
	// lease of the login is what holds every replica back; these let a
	// request or the sweeper skip a login in backoff without asking the
	// store (issue 9).
	Failures int       `json:"refresh_failures,omitempty"`
	RetryAt  time.Time `json:"retry_at,omitzero"`
}

// Session is one browser's login.
type Session struct {
	// ID is the raw session ID, the cookie value. It is never stored, and
	// is empty for sessions found by key (the sweeper, the admin API).
	ID string `json:"-"`
	// Key is the Hash of ID, what the store keys the session by.
	Key      string    `json:"-"`
	Identity Identity  `json:"identity"`
	Tokens   *Tokens   `json:"tokens,omitempty"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
	// Ends is the absolute end fixed at login (Created plus ttl then). A
	// ttl raised later does not lengthen the session: its index entries
	// end here, and a session living past them would escape revoke-all.
	// Zero in sessions stored before it existed.
	Ends time.Time `json:"ends,omitzero"`
}

// end is when s ends at the latest under the current ttl.
func (m *Manager) end(s *Session) time.Time {
	end := s.Created.Add(m.ttl)
	if !s.Ends.IsZero() && s.Ends.Before(end) {
		end = s.Ends
	}
	return end
}

// Manager creates, finds and ends sessions and pending logins in a Store.
type Manager struct {
	store Store
	ttl   time.Duration
	idle  time.Duration
	// indexTokens keeps the set of sessions holding WeChat tokens, which
	// only the refresh sweeper reads (and prunes of ended sessions);
	// without the sweeper nothing would read it. Each add drops the
	// entries past their session's absolute end.
	indexTokens bool
	// maxLogins bounds a person's logins ([session] max_logins_per_user).
	maxLogins int
	// OnCapped, if set, hears of each login (kind session or
	// token_family) a new session ended for max_logins_per_user: the
	// metrics hook.
	OnCapped func(kind string)
	// Now is the clock; tests replace it. Default: time.Now.
	Now func() time.Time
	// touchesFrom is when touches may be tried again (Unix nanoseconds,
	// by Now) after one failed: see touchPause.
	touchesFrom atomic.Int64
}

// NewManager returns a Manager over store. cfg must have its defaults set.
// A MaxLoginsPerUser of 0 is the default.
func NewManager(store Store, cfg Config) *Manager {
	maxLogins := cfg.MaxLoginsPerUser
	if maxLogins <= 0 {
		maxLogins = DefaultMaxLoginsPerUser
	}
	return &Manager{store: store, ttl: cfg.TTL, idle: cfg.IdleTTL, indexTokens: cfg.RefreshAhead > 0, maxLogins: maxLogins, Now: time.Now}
}

// Key prefixes in the store.
const (
	sessionPrefix = "sess:"
	pendingPrefix = "login:"
	claimPrefix   = "claim:"
	resultPrefix  = "result:"
)

// touchEvery bounds how often a session's last-seen time is written back, so
// a busy session does not cost a store write per request.
const touchEvery = time.Minute

// touchPause is how long no session is touched after a touch failed. A
// store that refuses writes (a full Redis) refuses them all, and a touch
// tried on every request would cost each one a failed transaction and
// a message to every replica, which also empties their caches: seven
// Redis commands a request instead of none, on the Redis in trouble.
const touchPause = 5 * time.Second

// Create stores a new session for id with a fresh ID (no fixation), and
// indexes it by user (for revocation) and, with tokens, for the sweeper.
func (m *Manager) Create(ctx context.Context, id Identity, tokens *Tokens) (*Session, error) {
	now := m.Now()
	s := &Session{ID: NewID(), Identity: id, Tokens: tokens, Created: now, LastSeen: now, Ends: now.Add(m.ttl)}
	s.Key = Hash(s.ID)
	if err := m.save(ctx, s); err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	// Listed until its absolute end, which no use extends: a session's
	// entries are written once, not on every touch, and are never dropped
	// while it lives. One that ends idle stays listed (and counted against
	// max_logins_per_user) until then; the admin API skips it.
	end := s.Ends
	if err := indexLogin(ctx, m.store, &id, "s:"+s.Key, end, now, m.maxLogins, m.OnCapped); err != nil {
		return nil, fmt.Errorf("indexing session: %w", err)
	}
	if tokens != nil && m.indexTokens {
		if _, err := m.store.AddMember(ctx, tokenIndex, s.Key, end, now, 0); err != nil {
			return nil, fmt.Errorf("indexing session: %w", err)
		}
	}
	return s, nil
}

// userIndex is the set of a user's sessions ("s:"+key) and token families
// ("f:"+id), by openid or unionid, each listed until its end at the latest
// and at most max_logins_per_user of them (index.go).
func userIndex(user string) string { return "idx:user:" + user }

// tokenIndex is the set of sessions that hold WeChat tokens.
const tokenIndex = "idx:tokens"

// GetByKey returns a session by its Key (no ID: it cannot be used to
// log in), or ErrNotFound.
func (m *Manager) GetByKey(ctx context.Context, key string) (*Session, error) {
	var s Session
	if err := getJSON(ctx, m.store, "session", sessionPrefix+key, &s); err != nil {
		return nil, err
	}
	s.Key = key
	now := m.Now()
	if !now.Before(m.end(&s)) || !now.Before(s.LastSeen.Add(m.idle)) {
		return nil, ErrNotFound
	}
	return &s, nil
}

// Update stores s.Tokens (new WeChat tokens, or a failed refresh's
// backoff) as the tokens of the session stored under s.Key, and changes
// nothing else. It swaps only the record it read (Store.Swap), reading
// again if the session changed since: a refresh takes seconds, and writing
// back the whole session it read before would undo a request's touch made
// meanwhile, putting the idle end back where it was, in the past for a
// session near it, so that the write deleted a session in use. A session
// that ended meanwhile (logout, revocation, its idle or absolute end)
// stays ended: Update then returns ErrNotFound.
func (m *Manager) Update(ctx context.Context, s *Session) error {
	key := sessionPrefix + s.Key
	for range updateTries {
		b, err := m.store.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("updating session: %w", err)
		}
		var cur Session
		if err := json.Unmarshal(b, &cur); err != nil {
			return fmt.Errorf("decoding session: %w", err)
		}
		ttl := m.expiry(&cur)
		if ttl <= 0 {
			return fmt.Errorf("updating session: %w", ErrNotFound)
		}
		cur.Tokens = s.Tokens
		nb, err := json.Marshal(&cur)
		if err != nil {
			return fmt.Errorf("updating session: %w", err)
		}
		ok, err := m.store.Swap(ctx, key, b, nb, ttl)
		if err != nil {
			return fmt.Errorf("updating session: %w", err)
		}
		if ok {
			return nil
		}
		// Changed (touched) or ended since the read: read it again.
	}
	return fmt.Errorf("%w: session changed %d times during an update", ErrUnavailable, updateTries)
}

// DeleteByKey ends a session found by key.
func (m *Manager) DeleteByKey(ctx context.Context, key string) error {
	if m.indexTokens {
		if err := m.store.RemoveMember(ctx, tokenIndex, key); err != nil {
			return err
		}
	}
	return m.store.Delete(ctx, sessionPrefix+key)
}

// WithTokens lists the keys of sessions that hold WeChat tokens (some may
// have ended since).
func (m *Manager) WithTokens(ctx context.Context) ([]string, error) {
	return m.store.Members(ctx, tokenIndex)
}

// Forget removes an ended session's key from the token index.
func (m *Manager) Forget(ctx context.Context, key string) error {
	return m.store.RemoveMember(ctx, tokenIndex, key)
}

// Get returns the session with raw ID, or ErrNotFound if the ID is malformed,
// unknown, or past its absolute or idle lifetime.
func (m *Manager) Get(ctx context.Context, rawID string) (*Session, error) {
	if !ValidID(rawID) {
		return nil, ErrNotFound
	}
	h := Hash(rawID)
	key := sessionPrefix + h
	v, b, err := loadRecord(ctx, m.store, key, decodeSession)
	if err != nil {
		return nil, err
	}
	// A copy: the cache's is shared.
	s := *v.(*Session)
	if s.Tokens != nil {
		t := *s.Tokens
		s.Tokens = &t
	}
	// The ID is copied: callers read it from a request whose buffer is
	// reused once the handler returns, and the session outlives that.
	s.ID, s.Key = strings.Clone(rawID), h
	now := m.Now()
	if !now.Before(m.end(&s)) || !now.Before(s.LastSeen.Add(m.idle)) {
		return nil, ErrNotFound
	}
	if now.Sub(s.LastSeen) >= touchEvery && now.UnixNano() >= m.touchesFrom.Load() {
		// A store that reads but refuses writes (a full Redis under
		// noeviction, a master demoted mid-failover) fails the touch: the
		// session stays valid as read, and only its idle end does not move.
		// The store's metrics count the failure.
		if err := m.touch(ctx, key, b, &s, now); err != nil {
			m.touchesFrom.Store(now.Add(touchPause).UnixNano())
		}
	}
	return &s, nil
}

// decodeSession decodes a stored session for the cache.
func decodeSession(b []byte) (any, error) {
	s := new(Session)
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("decoding session: %w", err)
	}
	return s, nil
}

// Delete ends the session with raw ID. Malformed or unknown IDs are ignored,
// so a bad cookie can never end someone else's session.
func (m *Manager) Delete(ctx context.Context, rawID string) error {
	if !ValidID(rawID) {
		return nil
	}
	return m.DeleteByKey(ctx, Hash(rawID))
}

// touch records that s, read as old, was seen at now. It stores s only if
// the record is still old: a write since the read (a refreshed WeChat
// token, a logout) wins, and the next request touches again.
func (m *Manager) touch(ctx context.Context, key string, old []byte, s *Session, now time.Time) error {
	seen := s.LastSeen
	s.LastSeen = now
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := m.store.Swap(ctx, key, old, b, m.expiry(s)); err != nil {
		s.LastSeen = seen
		return err
	}
	return nil
}

// save stores a new session.
func (m *Manager) save(ctx context.Context, s *Session) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	ttl := m.expiry(s)
	if ttl <= 0 {
		return m.store.Delete(ctx, sessionPrefix+s.Key)
	}
	return m.store.Set(ctx, sessionPrefix+s.Key, b, ttl)
}

// expiry is how long the store keeps s: the nearer of its absolute end and
// its idle end.
func (m *Manager) expiry(s *Session) time.Duration {
	end := m.end(s)
	if idle := s.LastSeen.Add(m.idle); idle.Before(end) {
		end = idle
	}
	return end.Sub(m.Now())
}
