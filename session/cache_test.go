package session

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxgate/wxgate/internal/redistest"
)

// countingStore counts the reads that reach a store.
type countingStore struct {
	Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

// fakeBus is a notifier a test drives by hand.
type fakeBus struct {
	changed func(string)
	live    func(bool)
	ready   chan struct{}
}

func (b *fakeBus) publish(context.Context, string) error { return nil }

func (b *fakeBus) unread() bool { return false }

func (b *fakeBus) watch(ctx context.Context, changed func(string), live func(bool)) {
	b.changed, b.live = changed, live
	close(b.ready)
	<-ctx.Done()
}

func decodeString(b []byte) (any, error) { return string(b), nil }

// TestRecordCache: what the cache keeps and when it must not.
func TestRecordCache(t *testing.T) {
	ctx := context.Background()
	key := sessionPrefix + "k"
	t.Run("a read is kept for the next", func(t *testing.T) {
		s := &countingStore{Store: NewMemory(0)}
		c := newRecordCache(s.Get, nil)
		_ = s.Set(ctx, key, []byte("v1"), time.Minute)
		for range 3 {
			if v, _, err := c.load(ctx, key, decodeString); err != nil || v != "v1" {
				t.Fatalf("load = %v, %v; want v1", v, err)
			}
		}
		if n := s.gets.Load(); n != 1 {
			t.Errorf("3 loads read the store %d times, want 1", n)
		}
	})
	t.Run("a read that raced a write is not kept", func(t *testing.T) {
		m := NewMemory(0)
		_ = m.Set(ctx, key, []byte("old"), time.Minute)
		var c *recordCache
		racing := func(ctx context.Context, k string) ([]byte, error) {
			b, err := m.Get(ctx, k)
			// The write lands (and drops the key) after this read and
			// before the cache keeps what it read.
			_ = m.Set(ctx, k, []byte("new"), time.Minute)
			c.forget(k)
			return b, err
		}
		c = newRecordCache(racing, nil)
		if v, _, _ := c.load(ctx, key, decodeString); v != "old" {
			t.Fatalf("first load = %v, want old (read before the write)", v)
		}
		c.get = m.Get
		if v, _, _ := c.load(ctx, key, decodeString); v != "new" {
			t.Errorf("load after the write = %v, want new: a read that raced the write was kept", v)
		}
	})
	t.Run("a write drops the key", func(t *testing.T) {
		m := NewMemory(0)
		_ = m.Set(ctx, key, []byte("v1"), time.Minute)
		for _, w := range []struct {
			name  string
			write func() error
			want  string
		}{
			{"Set", func() error { return m.Set(ctx, key, []byte("v2"), time.Minute) }, "v2"},
			{"Replace", func() error { _, err := m.Replace(ctx, key, []byte("v3"), time.Minute); return err }, "v3"},
			{"Swap", func() error { _, err := m.Swap(ctx, key, []byte("v3"), []byte("v4"), time.Minute); return err }, "v4"},
			{"Delete", func() error { return m.Delete(ctx, key) }, ""},
			{"SetNX", func() error { _, err := m.SetNX(ctx, key, []byte("v5"), time.Minute); return err }, "v5"},
		} {
			_, _, _ = m.load(ctx, key, decodeString) // cache it
			if err := w.write(); err != nil {
				t.Fatal(err)
			}
			v, _, err := m.load(ctx, key, decodeString)
			if w.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("after %s: load = %v, %v; want ErrNotFound", w.name, v, err)
				}
				continue
			}
			if v != w.want {
				t.Errorf("after %s: load = %v, %v; want %s", w.name, v, err, w.want)
			}
		}
	})
	t.Run("nothing is kept while the bus is down", func(t *testing.T) {
		s := &countingStore{Store: NewMemory(0)}
		bus := &fakeBus{ready: make(chan struct{})}
		c := newRecordCache(s.Get, bus)
		t.Cleanup(c.close)
		_ = s.Set(ctx, key, []byte("v1"), time.Minute)
		loads := func(n int) int64 {
			before := s.gets.Load()
			for range n {
				if _, _, err := c.load(ctx, key, decodeString); err != nil {
					t.Fatal(err)
				}
			}
			return s.gets.Load() - before
		}
		if n := loads(3); n != 3 {
			t.Errorf("before the subscription: 3 loads read the store %d times, want 3", n)
		}
		<-bus.ready
		bus.live(true)
		if n := loads(3); n != 1 {
			t.Errorf("subscribed: 3 loads read the store %d times, want 1", n)
		}
		bus.live(false)
		if n := loads(3); n != 3 {
			t.Errorf("after the subscription dropped: 3 loads read the store %d times, want 3", n)
		}
		bus.live(true)
		_ = s.Set(ctx, key, []byte("v2"), time.Minute) // a write elsewhere, announced
		if v, _, _ := c.load(ctx, key, decodeString); v != "v2" {
			t.Errorf("load = %v, want v2", v)
		}
		_ = s.Set(ctx, key, []byte("v3"), time.Minute)
		bus.changed(key)
		if v, _, _ := c.load(ctx, key, decodeString); v != "v3" {
			t.Errorf("load after news of a write = %v, want v3", v)
		}
	})
	t.Run("a record is not kept past two windows", func(t *testing.T) {
		s := &countingStore{Store: NewMemory(0)}
		c := newRecordCache(s.Get, nil)
		_ = s.Set(ctx, key, []byte("v1"), time.Minute)
		_, _, _ = c.load(ctx, key, decodeString)
		c.mu.Lock()
		c.cur[key].read = time.Now().Add(-2 * cacheWindow)
		c.mu.Unlock()
		_, _, _ = c.load(ctx, key, decodeString)
		if n := s.gets.Load(); n != 2 {
			t.Errorf("a load two windows after the first read the store %d times in all, want 2", n)
		}
	})
}

// waitLive starts r's cache subscription and waits until it is up.
func waitLive(t testing.TB, r *Redis) {
	t.Helper()
	_, _, _ = r.load(context.Background(), "sess:nothing", decodeString) // starts the subscription
	for deadline := time.Now().Add(5 * time.Second); !r.records.live.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the cache's subscription is not up after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cacheReplica is one replica's Redis store on cfg, its cache's
// subscription up, and a Manager over it.
func cacheReplica(t testing.TB, cfg RedisConfig) (*Redis, *Manager) {
	t.Helper()
	r, err := NewRedis(cfg, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	waitLive(t, r)
	return r, NewManager(r, Config{TTL: time.Hour, IdleTTL: time.Hour})
}

// TestRedisCacheAcrossReplicas: with two replicas on one Redis, a logout
// (or any write) on one is seen at once by the other, which had the
// session cached, and a dropped subscription is followed by an empty
// cache. On a Cluster too, where the channel is a shard channel.
func TestRedisCacheAcrossReplicas(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		srv := redistest.Start(t, "--appendonly", "no")
		cacheAcrossReplicas(t, RedisConfig{Addrs: []string{srv.Addr}}, []string{srv.Addr})
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		cacheAcrossReplicas(t, RedisConfig{Addrs: c.Addrs}, c.Addrs)
	})
}

func cacheAcrossReplicas(t *testing.T, cfg RedisConfig, nodes []string) {
	ctx := context.Background()
	_, a := cacheReplica(t, cfg)
	rb, b := cacheReplica(t, cfg)
	var admins []*redis.Client
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n})
		t.Cleanup(func() { _ = c.Close() })
		admins = append(admins, c)
	}
	gets := func() int64 {
		var n int64
		for _, admin := range admins {
			stats, err := admin.InfoMap(ctx, "commandstats").Result()
			if err != nil {
				t.Fatal(err)
			}
			var calls int64
			_, _ = fmt.Sscanf(stats["Commandstats"]["cmdstat_get"], "calls=%d,", &calls)
			n += calls
		}
		return n
	}

	for round := range 20 {
		s, err := a.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Once b has taken in the news of that write, it reads Redis once.
		for deadline := time.Now().Add(5 * time.Second); rb.unread(); {
			if time.Now().After(deadline) {
				t.Fatal("replica b's subscription still has news unread after 5s")
			}
			time.Sleep(time.Millisecond)
		}
		before := gets()
		for range 5 {
			if _, err := b.Get(ctx, s.ID); err != nil {
				t.Fatalf("round %d: Get on replica b: %v", round, err)
			}
		}
		if n := gets() - before; n != 1 {
			t.Errorf("round %d: 5 Gets on replica b read Redis %d times, want 1 (cached)", round, n)
		}
		if err := a.Delete(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		// At once: no waiting, no retry.
		if _, err := b.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: replica b right after a logout on replica a: %v, want ErrNotFound", round, err)
		}
	}

	t.Run("a dropped subscription empties the cache", func(t *testing.T) {
		s, err := a.Create(ctx, Identity{OpenID: "o2", Scope: "snsapi_base"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Get(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		// Cut every subscription, then delete while b may still be down:
		// the news is lost, and b must not use what it had.
		for _, admin := range admins {
			if err := admin.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Delete(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("replica b after a logout on a while its subscription was cut: %v, want ErrNotFound", err)
		}
		waitLive(t, rb)
	})
}

// TestRedisCacheWithoutChannel: a Redis user that may not use the channel
// (Redis 7 gives new users no channels) costs the cache, never a login or
// a logout: writes go on, and every read goes to Redis.
func TestRedisCacheWithoutChannel(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "no")
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	if err := admin.Do(ctx, "acl", "setuser", "nochannel", "on", ">nochannel-pw", "~*", "+@all", "resetchannels").Err(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WXGATE_TEST_NOCHANNEL_PW", "nochannel-pw")
	r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, Username: "nochannel", PasswordEnv: "WXGATE_TEST_NOCHANNEL_PW"}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	m := NewManager(r, Config{TTL: time.Hour, IdleTTL: time.Hour})
	s, err := m.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatalf("login with a Redis user without the channel: %v", err)
	}
	if _, err := m.Get(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, s.ID); err != nil {
		t.Fatalf("logout with a Redis user without the channel: %v", err)
	}
	if _, err := m.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the logout: %v, want ErrNotFound", err)
	}
	if r.records.live.Load() {
		t.Error("the cache is live without a subscription")
	}
}

// hookBus is a live notifier whose unread runs a test's hook first: the
// subscription's reader taking in news at that moment.
type hookBus struct {
	fakeBus
	onUnread func()
}

func (b *hookBus) unread() bool {
	if b.onUnread != nil {
		b.onUnread()
	}
	return false
}

// TestRecordCacheNewsDuringLookup: the subscription's reader may take in
// and handle the news of a write between a load's look in the cache and
// its check that nothing is unread (found by attack). The check then finds
// nothing unread, and what the load found before the news must not be
// used: a logout on another replica was not in force.
func TestRecordCacheNewsDuringLookup(t *testing.T) {
	ctx := context.Background()
	key := sessionPrefix + "k"
	s := NewMemory(0) // stands for Redis, written by another replica
	bus := &hookBus{fakeBus: fakeBus{ready: make(chan struct{})}}
	c := newRecordCache(s.Get, bus)
	t.Cleanup(c.close)
	_ = s.Set(ctx, key, []byte("logged in"), time.Minute)
	_, _, _ = c.load(ctx, key, decodeString) // starts the subscription
	<-bus.ready
	bus.live(true)
	if v, _, err := c.load(ctx, key, decodeString); err != nil || v != "logged in" {
		t.Fatalf("load = %v, %v; want logged in", v, err)
	}
	// The other replica logs out: the news is in the socket when the next
	// request's load begins, and the reader handles it during the load.
	_ = s.Delete(ctx, key)
	bus.onUnread = func() { bus.onUnread = nil; bus.changed(key) }
	if v, _, err := c.load(ctx, key, decodeString); !errors.Is(err, ErrNotFound) {
		t.Errorf("load after a logout elsewhere whose news arrived during it = %v, %v; want ErrNotFound", v, err)
	}
}

// TestCachedFamilyEnds: a family past its end (refresh_ttl after its last
// rotation) is refused even while a copy of it is cached, and an access
// token still inside its verification leeway does not carry it further.
func TestCachedFamilyEnds(t *testing.T) {
	cfg := TokenConfig{AccessTTL: time.Hour, RefreshTTL: time.Hour}
	cfg.SetDefaults()
	is := issuerOn(t, NewMemory(0), cfg)
	now := time.Now()
	is.Now = func() time.Time { return now }
	ctx := context.Background()
	p, err := is.Login(ctx, Identity{OpenID: "o1", Scope: "app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := is.Authenticate(ctx, p.AccessToken); err != nil {
		t.Fatal(err) // and now cached
	}
	now = now.Add(time.Hour + 10*time.Second) // past the family's end, inside the token's leeway
	if _, err := is.Authenticate(ctx, p.AccessToken); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Authenticate after the family's end: %v, want ErrInvalidToken", err)
	}
}
