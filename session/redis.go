package session

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store in Redis, for many replicas. Every value is sealed with
// AES-256-GCM under a key from the config, with the Redis key as additional
// data, so a dump of Redis alone gives nothing usable and values cannot be
// moved between keys. Every call has a timeout; failures wrap
// ErrUnavailable.
type Redis struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration
	// aeads seal with the first and open with any: an encryption key
	// being rotated in or out (Config.Provision).
	aeads []cipher.AEAD
	// waitReplicas and waitTimeout are RedisConfig's WaitReplicas and
	// WaitTimeout.
	waitReplicas int64
	waitTimeout  time.Duration
	// cluster is the client when it is a Cluster client, else nil.
	cluster *redis.ClusterClient
	// records keeps the sessions and token families read lately decoded;
	// writes drop what they write, here and, by publishing, on every
	// replica (cache.go).
	records *recordCache
	// cfg (defaults set) and the passwords dial the cache's subscription
	// (watch.go).
	cfg               RedisConfig
	password, sentPwd string
	// watched is the subscription's current connection; nil before the
	// first.
	watched atomic.Pointer[watchConn]
	// noChannel logs once that the Redis user may not publish.
	noChannel sync.Once
}

// NewRedis connects (lazily) to Redis. keys are 32-byte encryption keys:
// the first seals every value written, and a value sealed under any of
// them opens, so that a key can be rotated without logging anyone out.
func NewRedis(cfg RedisConfig, keys ...[]byte) (*Redis, error) {
	cfg.SetDefaults()
	if len(keys) == 0 {
		return nil, errors.New("session: the Redis store needs an encryption key")
	}
	aeads := make([]cipher.AEAD, len(keys))
	for i, key := range keys {
		if len(key) != 32 {
			return nil, errors.New("session: the Redis encryption key must be 32 bytes")
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if aeads[i], err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	pw, err := cfg.password()
	if err != nil {
		return nil, fmt.Errorf("session.redis.%w", err)
	}
	spw, err := cfg.sentinelPassword()
	if err != nil {
		return nil, fmt.Errorf("session.redis.%w", err)
	}
	opts := &redis.UniversalOptions{
		Addrs:            cfg.Addrs,
		IsClusterMode:    cfg.Cluster,
		MasterName:       cfg.MasterName,
		Username:         cfg.Username,
		Password:         pw,
		SentinelPassword: spw,
		DB:               cfg.DB,
		DialTimeout:      cfg.Timeout,
		ReadTimeout:      cfg.Timeout,
		WriteTimeout:     cfg.Timeout,
		// Retries with short backoffs (16 ms doubling to 128 ms, at most
		// about 240 ms in all, within the call's timeout) carry a call
		// across a dropped pooled connection and a restart: a Redis that
		// just started answers LOADING while it reads its append-only
		// file, and one quick retry was not enough (a 503 in CI). A Redis
		// that stays down costs each call that much before its 503.
		MaxRetries:      4,
		MinRetryBackoff: 16 * time.Millisecond,
		MaxRetryBackoff: 128 * time.Millisecond,
	}
	if cfg.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	}
	r := &Redis{
		c: redis.NewUniversalClient(opts), prefix: cfg.KeyPrefix, timeout: cfg.Timeout, aeads: aeads,
		waitReplicas: int64(cfg.WaitReplicas), waitTimeout: cfg.WaitTimeout,
		cfg: cfg, password: pw, sentPwd: spw,
	}
	r.cluster, _ = r.c.(*redis.ClusterClient)
	r.records = newRecordCache(r.Get, r)
	return r, nil
}

// ParseEncryptionKey decodes a base64 (standard or URL) 32-byte key.
func ParseEncryptionKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("not base64 of 32 bytes (make one with: head -c32 /dev/urandom | base64)")
}

// ParseEncryptionKeys decodes one or more keys separated by white space
// (a file with one key a line): the first seals, all open (NewRedis). An
// error names the key by its place, never its value.
func ParseEncryptionKeys(s string) ([][]byte, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, errors.New("no key (make one with: head -c32 /dev/urandom | base64)")
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		k, err := ParseEncryptionKey(f)
		if err != nil {
			if len(fields) > 1 {
				return nil, fmt.Errorf("key %d of %d: %w", i+1, len(fields), err)
			}
			return nil, err
		}
		for j, prev := range keys {
			if subtle.ConstantTimeCompare(prev, k) == 1 {
				return nil, fmt.Errorf("key %d repeats key %d", i+1, j+1)
			}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Close ends the cache's subscription and closes the connections.
func (r *Redis) Close() error {
	r.records.close()
	return r.c.Close()
}

func (r *Redis) load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	return r.records.load(ctx, key, decode)
}

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.wrap("ping", r.c.Ping(ctx).Err())
}

func (r *Redis) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if r.cluster != nil {
		// go-redis re-reads the slot map only on MOVED or once a minute,
		// so after a failover it would keep dialing the dead master for
		// its slots. Any failure asks for a fresh map (in the background,
		// coalesced by go-redis).
		r.cluster.ReloadState(context.Background())
	}
	return fmt.Errorf("%w: redis %s: %w", ErrUnavailable, op, err)
}

func (r *Redis) seal(key string, v []byte) []byte {
	aead := r.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(v)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return aead.Seal(nonce, nonce, v, []byte(key))
}

func (r *Redis) open(key string, b []byte) ([]byte, error) {
	for _, aead := range r.aeads {
		n := aead.NonceSize()
		if len(b) < n {
			return nil, fmt.Errorf("session: value at %s is not sealed", key)
		}
		if v, err := aead.Open(nil, b[:n], b[n:], []byte(key)); err == nil {
			return v, nil
		}
	}
	// A value sealed under none of the keys (one rotated out, or a wrong
	// encryption_key) is as good as absent.
	return nil, fmt.Errorf("%w: cannot open value at %s", ErrNotFound, key)
}

// write sends the command cmd queues on c and, with wait_replicas, WAIT
// right behind it on the same connection (WAIT counts the writes of its
// own connection). The command's own error, redis.Nil included, comes
// first; then too few replicas is an error, although the master keeps the
// write: a failover could still lose it.
func (r *Redis) write(ctx context.Context, cmd func(c redis.Cmdable) redis.Cmder) error {
	if r.waitReplicas == 0 {
		return cmd(r.c).Err()
	}
	var done redis.Cmder
	var wait *redis.Cmd
	_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		done = cmd(p)
		wait = p.Do(ctx, "wait", r.waitReplicas, r.waitTimeout.Milliseconds())
		return nil
	})
	if err := done.Err(); err != nil {
		return err
	}
	n, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	if n < r.waitReplicas {
		return fmt.Errorf("wait: %d of %d replicas acknowledged the write within %s", n, r.waitReplicas, r.waitTimeout)
	}
	return nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + key
	b, err := r.c.Get(ctx, k).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, r.wrap("get", err)
	}
	return r.open(k, b)
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return r.Delete(ctx, key)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + key
	err := r.wrap("set", r.write(ctx, func(c redis.Cmdable) redis.Cmder { return c.Set(ctx, k, r.seal(k, value), ttl) }))
	return r.records.wrote(ctx, key, true, err)
}

// SetNX implements Store.
func (r *Redis) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + key
	sealed := r.seal(k, value)
	var nx *redis.BoolCmd
	err := r.write(ctx, func(c redis.Cmdable) redis.Cmder { nx = c.SetNX(ctx, k, sealed, ttl); return nx })
	if err != nil {
		// A lease or claim that replicas may not have is not won, so it
		// must not stay held either: a refresh token's rotation claim set
		// on the master while WAIT fell short made the client's retry look
		// like reuse and revoked its family, and a lease would hold every
		// replica back for its whole TTL. Best effort: if this fails too,
		// the key expires.
		if nx != nil && nx.Err() == nil && nx.Val() {
			_ = delIfValue.Run(ctx, r.c, []string{k}, sealed).Err()
		}
		return false, r.records.wrote(ctx, key, false, r.wrap("setnx", err))
	}
	return nx.Val(), r.records.wrote(ctx, key, nx.Val(), nil)
}

// delIfValue deletes KEYS[1] only if it still holds ARGV[1] (a sealed value,
// unique by its nonce): what SetNX set, not a later holder's.
var delIfValue = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Replace implements Store with SET ... XX, which checks and sets in one
// step.
func (r *Redis) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		var del *redis.IntCmd
		err := r.write(ctx, func(c redis.Cmdable) redis.Cmder { del = c.Del(ctx, r.prefix+key); return del })
		if err != nil {
			return false, r.records.wrote(ctx, key, true, r.wrap("del", err))
		}
		return del.Val() > 0, r.records.wrote(ctx, key, del.Val() > 0, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + key
	var xx *redis.BoolCmd
	err := r.write(ctx, func(c redis.Cmdable) redis.Cmder { xx = c.SetXX(ctx, k, r.seal(k, value), ttl); return xx })
	if errors.Is(err, redis.Nil) {
		return false, r.records.wrote(ctx, key, false, nil)
	}
	if err != nil {
		return false, r.records.wrote(ctx, key, true, r.wrap("setxx", err))
	}
	return xx.Val(), r.records.wrote(ctx, key, xx.Val(), nil)
}

// Swap implements Store with an optimistic transaction (WATCH, GET, MULTI,
// SET, EXEC): values are sealed with a random nonce, so the comparison is
// of opened values, here, and EXEC fails if anyone wrote the key since
// the GET. It is not waited for (wait_replicas): a touch lost in a
// failover only costs the next request another touch.
func (r *Redis) Swap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + key
	swapped := false
	err := r.c.Watch(ctx, func(tx *redis.Tx) error {
		b, err := tx.Get(ctx, k).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur, err := r.open(k, b); err != nil || !bytes.Equal(cur, old) {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if ttl <= 0 {
				p.Del(ctx, k)
			} else {
				p.Set(ctx, k, r.seal(k, value), ttl)
			}
			return nil
		})
		swapped = err == nil
		return err
	}, k)
	if errors.Is(err, redis.TxFailedErr) {
		return false, r.records.wrote(ctx, key, false, nil)
	}
	if err != nil {
		return false, r.records.wrote(ctx, key, true, r.wrap("swap", err))
	}
	return swapped, r.records.wrote(ctx, key, swapped, nil)
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := r.wrap("del", r.write(ctx, func(c redis.Cmdable) redis.Cmder { return c.Del(ctx, r.prefix+key) }))
	return r.records.wrote(ctx, key, true, err)
}

// addMember is AddMember in one step on one key (so it runs on Redis
// Cluster): the set is a sorted set scored by each member's time in unix
// milliseconds. It converts a set from before issue 9 (a plain set whose
// members all lived as long as it did), drops the members whose time has
// passed (ZREMRANGEBYSCORE, O(log n) plus one step per member dropped),
// lists the member unless it is already listed until later (ZADD GT would
// need Redis 6.2), keeps the key as long as its latest member, and returns
// the members beyond the limit, lowest score first, never the new one.
// KEYS[1] = the set; ARGV = member, until, now, limit.
var addMember = redis.NewScript(`
local key, member = KEYS[1], ARGV[1]
local untilMs, now, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('TYPE', key).ok == 'set' then
  local pttl = redis.call('PTTL', key)
  local old = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  local at = untilMs
  if pttl > 0 then at = now + pttl end
  for _, m in ipairs(old) do redis.call('ZADD', key, at, m) end
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local had = redis.call('ZSCORE', key, member)
if not had or tonumber(had) < untilMs then
  redis.call('ZADD', key, untilMs, member)
end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
local over = {}
local n = redis.call('ZCARD', key) - limit
if limit > 0 and n > 0 then
  for _, m in ipairs(redis.call('ZRANGE', key, 0, n)) do
    if m ~= member and #over < n then over[#over + 1] = m end
  end
end
return over`)

// listMembers and removeMember also read a set from before issue 9, until
// AddMember converts it: a person's logins must stay revocable across the
// upgrade. KEYS[1] = the set; removeMember's ARGV[1] = the member.
var (
	listMembers = redis.NewScript(`
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SMEMBERS', KEYS[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)`)
	removeMember = redis.NewScript(`
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SREM', KEYS[1], ARGV[1]) end
return redis.call('ZREM', KEYS[1], ARGV[1])`)
)

// AddMember implements Store. Members are hashes and IDs, not secrets, and
// are stored as they are. Times are the caller's clock (the Manager's),
// the one that decides when what they name ends.
func (r *Redis) AddMember(ctx context.Context, key, member string, until, now time.Time, limit int) ([]string, error) {
	if !until.After(now) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	keys, args := []string{r.prefix + key}, []any{member, until.UnixMilli(), now.UnixMilli(), max(limit, 0)}
	var res *redis.Cmd
	// Waited for like the login it lists (wait_replicas): a failover must
	// not keep a session and lose its entry, which the admin's revocation
	// finds it by.
	err := r.write(ctx, func(c redis.Cmdable) redis.Cmder {
		if r.waitReplicas > 0 {
			// In a pipeline EVALSHA cannot fall back to EVAL on NOSCRIPT
			// (a restarted or promoted server has no scripts): send the
			// script itself.
			res = addMember.Eval(ctx, c, keys, args...)
		} else {
			res = addMember.Run(ctx, c, keys, args...)
		}
		return res
	})
	if err != nil {
		return nil, r.wrap("add member", err)
	}
	over, err := res.StringSlice()
	if err != nil {
		return nil, r.wrap("add member", err)
	}
	return over, nil
}

// Members implements Store.
func (r *Redis) Members(ctx context.Context, key string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m, err := listMembers.Run(ctx, r.c, []string{r.prefix + key}).StringSlice()
	return m, r.wrap("members", err)
}

// RemoveMember implements Store.
func (r *Redis) RemoveMember(ctx context.Context, key, member string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.wrap("remove member", removeMember.Run(ctx, r.c, []string{r.prefix + key}, member).Err())
}

// LogRedisTo sends go-redis's own messages (failed dials, a Sentinel
// naming a new master) to log at warning level. go-redis otherwise prints
// them as plain text on stderr, among the gateway's JSON lines, where a
// log pipeline cannot parse them. go-redis has one logger per process:
// call this once, before any Redis client works.
func LogRedisTo(log *slog.Logger) {
	redis.SetLogger(redisLogger{log})
	watchLog.Store(log)
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
