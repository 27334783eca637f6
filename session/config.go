package session

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
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
	// CookieDomain, if set (".example.com"), is the Domain of the browser
	// session cookie on the hosts it covers, so that a login on
	// [server] auth_host logs the browser in on every host under it
	// without a hand-off ticket. The cookie is then named
	// __Secure-wxgate_session on https on those hosts (__Host- forbids a
	// Domain); the others keep a host-only __Host-wxgate_session. Every
	// host under the domain can read the cookie, and every host under its
	// registrable domain can set one: set it only when all of them are
	// trusted. Default: none (host-only cookies). The proxy
	// reads and checks it.
	CookieDomain string `toml:"cookie_domain"`
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

	// keys are the encryption keys Provision read and decoded: nil before
	// Provision, with the memory store, and when a key did not resolve.
	keys [][]byte
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

// Provision reads the section's secrets from their sources, once: with
// store = "redis", the encryption key (decoded) and the Redis passwords.
// It reports every source it cannot read and every key that does not
// decode, naming the key and never the value, and goes on past them so
// that Validate can check the rest. A section without a source for the
// encryption key is Validate's to report. NewStore uses what Provision
// read; Validate reads nothing. Call it again after changing c.
func (c *Config) Provision() error {
	c.keys = nil
	if c.Store != "redis" {
		return nil
	}
	var errs []error
	// Where the key comes from, for the errors: readSecret takes the
	// variable first.
	src := "encryption_key_env: environment variable " + c.EncryptionKeyEnv
	if c.EncryptionKeyEnv == "" {
		src = "encryption_key_file: " + c.EncryptionKeyFile
	}
	raw, err := readSecret("encryption_key", c.EncryptionKeyEnv, c.EncryptionKeyFile)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("session.%w", err))
	case raw == "" && c.EncryptionKeyEnv == "" && c.EncryptionKeyFile != "":
		errs = append(errs, fmt.Errorf("session.%s is empty", src))
	case raw != "":
		if c.keys, err = ParseEncryptionKeys(raw); err != nil {
			errs = append(errs, fmt.Errorf("session.%s: %w", src, err))
		}
	}
	errs = append(errs, c.Redis.provision()...)
	return errors.Join(errs...)
}

// NewStore opens the configured store for a gateway started as as. For
// the memory store it loads (and so removes) the snapshot, if any, and
// reports how many entries came back; the snapshot's Origin must suit as
// (Memory.LoadSnapshot). It is for the start of a gateway, never for a
// check of its config: Provision and Validate leave the snapshot alone.
// The Redis store needs c provisioned (Provision).
func (c *Config) NewStore(as Origin) (Store, int, error) {
	switch c.Store {
	case "redis":
		if c.keys == nil {
			return nil, 0, errors.New("session: the Redis store needs its encryption key: call Config.Provision first")
		}
		r, err := NewRedis(c.Redis, c.keys...)
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

// Validate reports every problem with the section, one per line, each
// naming its key. It reads nothing (the secrets are Provision's) and
// changes nothing.
func (c *Config) Validate() error {
	var errs []error
	switch c.Store {
	case "memory":
		// Each names its own key, so that check places it on its line.
		if c.Redis.Addrs != nil {
			errs = append(errs, fmt.Errorf("session.redis: set, but store is \"memory\""))
		}
		if c.EncryptionKeyEnv != "" {
			errs = append(errs, fmt.Errorf("session.encryption_key_env: set, but store is \"memory\" (only Redis values are sealed)"))
		}
		if c.EncryptionKeyFile != "" {
			errs = append(errs, fmt.Errorf("session.encryption_key_file: set, but store is \"memory\" (only Redis values are sealed)"))
		}
	case "redis":
		if c.EncryptionKeyEnv == "" && c.EncryptionKeyFile == "" {
			errs = append(errs, fmt.Errorf("session.encryption_key_env: required with store = \"redis\" (or encryption_key_file)"))
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

// RedisConfig is the [session.redis] section.
type RedisConfig struct {
	// Addrs are host:port pairs: one for a standalone server, several for a
	// Cluster, or the Sentinels when MasterName is set. Default:
	// ["127.0.0.1:6379"].
	Addrs []string `toml:"addrs"`
	// Cluster selects Cluster mode even with a single address: a managed
	// Cluster's configuration endpoint, or one seed node. Without it one
	// address is a standalone server, and a Cluster node answers MOVED for
	// the keys of every slot it does not own. Default: false.
	Cluster bool `toml:"cluster"`
	// MasterName selects Sentinel mode with that master.
	MasterName string `toml:"master_name"`
	// Username for Redis ACLs. Optional.
	Username string `toml:"username"`
	// PasswordEnv or PasswordFile hold the password. Optional.
	PasswordEnv  string `toml:"password_env"`
	PasswordFile string `toml:"password_file"`
	// SentinelPasswordEnv or SentinelPasswordFile hold the Sentinels' own
	// password (their requirepass), with MasterName; the password above is
	// the master's. Optional.
	SentinelPasswordEnv  string `toml:"sentinel_password_env"`
	SentinelPasswordFile string `toml:"sentinel_password_file"`
	// DB is the database number (standalone and Sentinel; a Cluster has
	// only 0). Default: 0.
	DB int `toml:"db"`
	// TLS connects with TLS; TLSServerName overrides the name checked.
	TLS           bool   `toml:"tls"`
	TLSServerName string `toml:"tls_server_name"`
	// Timeout bounds every call. Default: 500ms.
	Timeout time.Duration `toml:"timeout"`
	// KeyPrefix starts every key, so several gateways can share a Redis.
	// Default: "wxgate:".
	KeyPrefix string `toml:"key_prefix"`
	// WaitReplicas, if set, makes every write of a value (Set, SetNX,
	// Replace, Delete: sessions, logouts, token families, leases; and
	// AddMember: a person's index entries) count
	// only once that many replicas have it: the write is followed by WAIT
	// on the same connection, and fewer acknowledgements within
	// WaitTimeout fail the call (ErrUnavailable, a 503). Replication is
	// asynchronous, so without it a failover can lose the master's last
	// writes: a login just confirmed, or a logout. Swap (touches, saved
	// WeChat tokens) and RemoveMember are not waited for. Standalone and
	// Sentinel only. Default: 0 (off).
	WaitReplicas int `toml:"wait_replicas"`
	// WaitTimeout bounds each WAIT; it must be below Timeout. Default:
	// 100ms.
	WaitTimeout time.Duration `toml:"wait_timeout"`

	// pass and sentinelPass are the passwords Provision read; provisioned
	// says it ran. NewRedis given a config that was never provisioned
	// reads them itself.
	pass, sentinelPass secret.Secret
	provisioned        bool
}

// SetDefaults fills zero fields with their defaults.
func (c *RedisConfig) SetDefaults() {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"127.0.0.1:6379"}
	}
	if c.Timeout == 0 {
		c.Timeout = 500 * time.Millisecond
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "wxgate:"
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = 100 * time.Millisecond
	}
}

// isCluster reports whether the client will be a Cluster client (go-redis's
// NewUniversalClient rule).
func (c *RedisConfig) isCluster() bool {
	return c.MasterName == "" && (c.Cluster || len(c.Addrs) > 1)
}

// validate reports the section's problems; c has its defaults set.
func (c *RedisConfig) validate() []error {
	var errs []error
	for i, a := range c.Addrs {
		if err := checkRedisAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("session.redis.addrs: entry %d: %w", i+1, err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("session.redis.timeout: must not be negative"))
	}
	if c.MasterName == "" && (c.SentinelPasswordEnv != "" || c.SentinelPasswordFile != "") {
		errs = append(errs, fmt.Errorf("session.redis.sentinel_password_env: set, but master_name (Sentinel mode) is not"))
	}
	if c.Cluster && c.MasterName != "" {
		errs = append(errs, fmt.Errorf("session.redis.cluster: Cluster and Sentinel (master_name) exclude each other"))
	}
	if c.WaitReplicas < 0 {
		errs = append(errs, fmt.Errorf("session.redis.wait_replicas: must not be negative"))
	}
	if c.WaitReplicas > 0 && c.isCluster() {
		// WAIT names no key, so a Cluster client cannot send it to the
		// node that took the write.
		errs = append(errs, fmt.Errorf("session.redis.wait_replicas: standalone or Sentinel only, not with a Cluster"))
	}
	if c.WaitReplicas > 0 && (c.WaitTimeout <= 0 || c.WaitTimeout >= c.Timeout) {
		errs = append(errs, fmt.Errorf("session.redis.wait_timeout: %s must be above 0 and below timeout (%s)", c.WaitTimeout, c.Timeout))
	}
	if c.DB != 0 && c.isCluster() {
		// go-redis would silently use database 0, perhaps another
		// application's.
		errs = append(errs, fmt.Errorf("session.redis.db: %d, but a Cluster (several addrs, or cluster = true) has only database 0", c.DB))
	}
	return errs
}

// checkRedisAddr refuses an address the client could not dial. A URL
// ("redis://:password@host:6379", the form most Redis clients take) is
// not shown: the client's dial errors would log it, password and all, on
// every attempt.
func checkRedisAddr(a string) error {
	if strings.Contains(a, "://") || strings.Contains(a, "@") {
		return errors.New("a URL, not host:port (not shown, since it may hold a password: set it with password_env or password_file)")
	}
	host, port, err := net.SplitHostPort(a)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not host:port (\"redis:6379\")", a)
	}
	return nil
}

// provision reads the passwords from their sources and reports those it
// cannot read.
func (c *RedisConfig) provision() []error {
	var errs []error
	pw, err := readSecret("password", c.PasswordEnv, c.PasswordFile)
	if err != nil {
		errs = append(errs, fmt.Errorf("session.redis.%w", err))
	}
	spw, err := readSecret("sentinel_password", c.SentinelPasswordEnv, c.SentinelPasswordFile)
	if err != nil {
		errs = append(errs, fmt.Errorf("session.redis.%w", err))
	}
	c.pass, c.sentinelPass, c.provisioned = secret.Secret(pw), secret.Secret(spw), true
	return errs
}

// password is the master's password: what Provision read, or, for a
// config that was never provisioned (NewRedis called directly), read now.
func (c *RedisConfig) password() (string, error) {
	if c.provisioned {
		return c.pass.Reveal(), nil
	}
	return readSecret("password", c.PasswordEnv, c.PasswordFile)
}

// sentinelPassword is the Sentinels' password, as password is the
// master's.
func (c *RedisConfig) sentinelPassword() (string, error) {
	if c.provisioned {
		return c.sentinelPass.Reveal(), nil
	}
	return readSecret("sentinel_password", c.SentinelPasswordEnv, c.SentinelPasswordFile)
}

// readSecret reads a secret from the environment variable env or the file
// file, whichever is set; "" when neither is. Errors name the key
// (name+"_env" or name+"_file"), never the value.
func readSecret(name, env, file string) (string, error) {
	switch {
	case env != "":
		v := os.Getenv(env)
		if v == "" {
			return "", fmt.Errorf("%s_env: %w", name, &secret.UnsetError{Var: env})
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// TokenConfig is the [tokens] section: API clients' token pairs.
type TokenConfig struct {
	// SigningKeyFile holds the PEM signing keys (the first signs, all
	// verify). Generated with an ES256 key on first start when missing.
	// `wxgate dev` keeps its own in a dev/ directory beside this path, and
	// the keys it generates carry "Wxgate-Origin: dev", which serve
	// refuses (LoadKeys). Default: ".wxgate/signing-key.pem".
	SigningKeyFile string `toml:"signing_key_file"`
	// AccessTTL is an access token's lifetime. Default: 2h.
	AccessTTL time.Duration `toml:"access_ttl"`
	// RefreshTTL is a refresh token's lifetime; a family lives as long as it
	// keeps rotating. Default: 720h (30 days).
	RefreshTTL time.Duration `toml:"refresh_ttl"`
	// ReuseGrace: a rotated-out refresh token presented again within this
	// long of its rotation is refused without revoking its family, so that
	// a client's racing requests do not log it out. Later reuse revokes the
	// family. Default: 2s. Zero would make any race a revocation.
	ReuseGrace time.Duration `toml:"reuse_grace"`
}

// SetDefaults fills zero fields with their defaults.
func (c *TokenConfig) SetDefaults() {
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = ".wxgate/signing-key.pem"
	}
	if c.AccessTTL == 0 {
		c.AccessTTL = 2 * time.Hour
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 720 * time.Hour
	}
	if c.ReuseGrace == 0 {
		c.ReuseGrace = 2 * time.Second
	}
}

// Validate reports every problem with the section, one per line.
func (c *TokenConfig) Validate() error {
	var errs []error
	if c.AccessTTL < time.Minute || c.AccessTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("tokens.access_ttl: %s is outside 1m..24h", c.AccessTTL))
	}
	if c.RefreshTTL < c.AccessTTL {
		errs = append(errs, fmt.Errorf("tokens.refresh_ttl: %s is shorter than access_ttl", c.RefreshTTL))
	}
	if c.ReuseGrace < 0 || c.ReuseGrace > time.Minute {
		errs = append(errs, fmt.Errorf("tokens.reuse_grace: %s is outside 0..1m", c.ReuseGrace))
	}
	return errors.Join(errs...)
}
