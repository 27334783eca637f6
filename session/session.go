// Package session keeps browser sessions and pending logins on the server.
// Browsers hold only an opaque random ID; stores key everything by a hash
// of it. It knows nothing of HTTP: proxy reads and sets the cookies.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wxgate/wxgate/internal/secret"
)

// Config is the [session] section of gateway.toml.
type Config struct {
	// Store is where sessions, pending logins, token families and shared
	// WeChat tokens live: "memory" (one replica) or "redis" (many).
	// Default: memory.
	Store string `toml:"store"`
	// SnapshotFile, for the memory store, is written at graceful shutdown
	// and read at start, so a graceful restart loses no session. It is
	// consumed: removed as soon as it is read, before serving, and a file
	// that cannot be removed stops the start. Left in place it would be
	// read again after a crash and bring back sessions logged out and
	// tokens revoked since (issue 8). So nothing older than the last
	// graceful stop is ever restored, and after a crash (kill -9, the OOM
	// killer) the store starts empty: users log in again.
	// `wxgate dev` keeps its own in a dev/ directory beside this path and
	// marks it; serve refuses it, and refuses files in the format from
	// before the mark (Memory.LoadSnapshot). Empty: no snapshot.
	SnapshotFile string `toml:"snapshot_file"`
	// Redis configures the Redis store.
	Redis RedisConfig `toml:"redis"`
	// EncryptionKeyEnv or EncryptionKeyFile hold the base64 32-byte key
	// that seals values in Redis. Required with store = "redis"; every
	// replica needs the same key.
	EncryptionKeyEnv  string `toml:"encryption_key_env"`
	EncryptionKeyFile string `toml:"encryption_key_file"`
	// TTL is a session's absolute lifetime. Default: 168h.
	TTL time.Duration `toml:"ttl"`
	// IdleTTL ends a session unused this long. Default: 24h.
	IdleTTL time.Duration `toml:"idle_ttl"`
	// RefreshMargin: a session's WeChat access token is refreshed when a
	// request meets it with less than this left. Default: 5m.
	RefreshMargin time.Duration `toml:"refresh_margin"`
	// MaxPending bounds the browser logins one replica keeps in flight (each
	// /start stores one for 10 minutes, about 220 bytes and its return URL);
	// beyond it /start answers 429. Default: 100000.
	MaxPending int `toml:"max_pending"`
	// MaxPendingPerClient bounds the logins in flight from one client
	// address (an IPv4 address or an IPv6 /64) on one replica; beyond it
	// that client gets 429. Keep it generous: carrier-grade NAT puts many
	// phones behind one address. Default: 300.
	MaxPendingPerClient int `toml:"max_pending_per_client"`
	// RefreshAhead, if set, runs a sweeper at this interval that refreshes
	// the WeChat tokens of sessions within RefreshMargin of expiry without
	// waiting for a request: at most 4 at once per replica, skipping those
	// in backoff, starting refreshes for at most one interval per sweep.
	// 0 (off) or at least 1s. Default: 0 (off).
	RefreshAhead time.Duration `toml:"refresh_ahead"`
	// MaxLoginsPerUser bounds the logins (browser sessions and API token
	// families) one person (openid or unionid) keeps. A login beyond it
	// ends the ones nearest their end (a session's is its absolute end, ttl
	// after it began; a family's is refresh_ttl after its last rotation),
	// as a logout or revocation would. Default: 100.
	MaxLoginsPerUser int `toml:"max_logins_per_user"`
	// RefreshWait bounds how long a request whose WeChat access token has
	// expired waits for its refresh (issue 9). A request whose token is
	// still valid never waits: its refresh runs in the background. After
	// the wait a route that only needs the identity is served anyway (the
	// wxgate session outlives WeChat's token); a route with
	// pass_wechat_token gets 503 with Retry-After. Default: 3s. Zero: never
	// wait. Nil until SetDefaults; read it with Wait.
	RefreshWait *time.Duration `toml:"refresh_wait"`
	// RefreshBackoff is the pause after a failed refresh before that login
	// is tried again, by any request, the sweeper or any replica; it doubles
	// with each consecutive failure up to 12 times itself, with ±20%
	// jitter (issue 9). 100ms..10m. Default: 5s (so at most 1m before the
	// jitter, 72s with it).
	RefreshBackoff time.Duration `toml:"refresh_backoff"`
}

// DefaultRefreshWait is RefreshWait's default.
const DefaultRefreshWait = 3 * time.Second

// Wait is RefreshWait, or its default before SetDefaults.
func (c *Config) Wait() time.Duration {
	if c.RefreshWait == nil {
		return DefaultRefreshWait
	}
	return *c.RefreshWait
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Store == "" {
		c.Store = "memory"
	}
	if c.TTL == 0 {
		c.TTL = 168 * time.Hour
	}
	if c.IdleTTL == 0 {
		c.IdleTTL = 24 * time.Hour
	}
	if c.RefreshMargin == 0 {
		c.RefreshMargin = 5 * time.Minute
	}
	if c.MaxPending == 0 {
		c.MaxPending = 100_000
	}
	if c.MaxPendingPerClient == 0 {
		c.MaxPendingPerClient = 300
	}
	if c.MaxLoginsPerUser == 0 {
		c.MaxLoginsPerUser = DefaultMaxLoginsPerUser
	}
	if c.RefreshWait == nil {
		d := DefaultRefreshWait
		c.RefreshWait = &d
	}
	if c.RefreshBackoff == 0 {
		c.RefreshBackoff = 5 * time.Second
	}
	if c.Store == "redis" {
		c.Redis.SetDefaults()
	}
}

// EncryptionKey reads the Redis encryption key from its source.
func (c *Config) EncryptionKey() ([]byte, error) {
	raw, err := readSecret("encryption_key", c.EncryptionKeyEnv, c.EncryptionKeyFile)
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, fmt.Errorf("encryption_key_env: required with store = \"redis\" (or encryption_key_file)")
	}
	k, err := ParseEncryptionKey(raw)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	return k, nil
}

// NewStore opens the configured store for a gateway started as as. For
// the memory store it loads (and so removes) the snapshot, if any, and
// reports how many entries came back; the snapshot's Origin must suit as
// (Memory.LoadSnapshot).
func (c *Config) NewStore(as Origin) (Store, int, error) {
	switch c.Store {
	case "redis":
		key, err := c.EncryptionKey()
		if err != nil {
			return nil, 0, fmt.Errorf("session.%w", err)
		}
		r, err := NewRedis(c.Redis, key)
		return r, 0, err
	default:
		m := NewMemory(0)
		if c.SnapshotFile == "" {
			return m, 0, nil
		}
		n, err := m.LoadSnapshot(c.SnapshotFile, as)
		if err != nil {
			return nil, 0, fmt.Errorf("session.snapshot_file: %w", err)
		}
		return m, n, nil
	}
}

// Validate reports every problem with the section, one per line.
func (c *Config) Validate() error {
	var errs []error
	switch c.Store {
	case "memory":
		if c.Redis.Addrs != nil || c.EncryptionKeyEnv != "" || c.EncryptionKeyFile != "" {
			errs = append(errs, fmt.Errorf("session.redis: set, but store is \"memory\""))
		}
	case "redis":
		if _, err := c.EncryptionKey(); err != nil {
			errs = append(errs, fmt.Errorf("session.%w", err))
		}
		errs = append(errs, c.Redis.validate()...)
		if c.SnapshotFile != "" {
			errs = append(errs, fmt.Errorf("session.snapshot_file: only the memory store has snapshots"))
		}
	default:
		errs = append(errs, fmt.Errorf("session.store: %q is not a known store (memory or redis)", c.Store))
	}
	if c.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("session.ttl: %s is below the 1m minimum", c.TTL))
	}
	if c.IdleTTL < time.Minute {
		errs = append(errs, fmt.Errorf("session.idle_ttl: %s is below the 1m minimum", c.IdleTTL))
	}
	if c.RefreshMargin < 0 || c.RefreshMargin > time.Hour {
		errs = append(errs, fmt.Errorf("session.refresh_margin: %s is outside 0..1h", c.RefreshMargin))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("session.max_pending: %d must be at least 1", c.MaxPending))
	}
	if c.MaxPendingPerClient < 1 || c.MaxPendingPerClient > c.MaxPending {
		errs = append(errs, fmt.Errorf("session.max_pending_per_client: %d must be between 1 and max_pending", c.MaxPendingPerClient))
	}
	if c.MaxLoginsPerUser < 1 {
		errs = append(errs, fmt.Errorf("session.max_logins_per_user: %d must be at least 1", c.MaxLoginsPerUser))
	}
	if c.RefreshAhead < 0 || (c.RefreshAhead > 0 && c.RefreshAhead < time.Second) {
		errs = append(errs, fmt.Errorf("session.refresh_ahead: %s must be 0 (off) or at least 1s", c.RefreshAhead))
	}
	if w := c.Wait(); w < 0 || w > time.Minute {
		errs = append(errs, fmt.Errorf("session.refresh_wait: %s is outside 0..1m", w))
	}
	if c.RefreshBackoff < 100*time.Millisecond || c.RefreshBackoff > 10*time.Minute {
		errs = append(errs, fmt.Errorf("session.refresh_backoff: %s is outside 100ms..10m", c.RefreshBackoff))
	}
	return errors.Join(errs...)
}

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

// UserIndex is the set of a user's sessions ("s:"+key) and token families
// ("f:"+id), by openid or unionid, each listed until its end at the latest
// and at most max_logins_per_user of them (index.go).
func UserIndex(user string) string { return "idx:user:" + user }

// tokenIndex is the set of sessions that hold WeChat tokens.
const tokenIndex = "idx:tokens"

// Store returns the manager's store (for leases shared with it).
func (m *Manager) Store() Store { return m.store }

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
	key := sessionPrefix + Hash(rawID)
	b, err := m.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding session: %w", err)
	}
	// The ID is copied: callers read it from a request whose buffer is
	// reused once the handler returns, and the session outlives that.
	s.ID, s.Key = strings.Clone(rawID), Hash(rawID)
	now := m.Now()
	if !now.Before(m.end(&s)) || !now.Before(s.LastSeen.Add(m.idle)) {
		return nil, ErrNotFound
	}
	if now.Sub(s.LastSeen) >= touchEvery {
		if err := m.touch(ctx, key, b, &s, now); err != nil {
			return nil, fmt.Errorf("touching session: %w", err)
		}
	}
	return &s, nil
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
