package session

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wxgate/wxgate/internal/redistest"
)

// TestFullRedis: a Redis at maxmemory under noeviction (what
// docs/operations.md advises) refuses writes. A new login then fails with
// an error (a 503 to the browser), but a session already made keeps
// working, its touch included: reading it needs no write.
func TestFullRedis(t *testing.T) {
	m, now, c := fullRedisManager(t)
	ctx := context.Background()
	s, err := m.Create(ctx, Identity{OpenID: "o-before-full", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, c)
	if _, err := m.Create(ctx, Identity{OpenID: "o-after-full", Scope: "snsapi_base"}, nil); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Create in a full Redis = %v, want a store error", err)
	}
	*now = now.Add(2 * touchEvery) // due for a touch
	got, err := m.Get(ctx, s.ID)
	if err != nil || got.Identity.OpenID != "o-before-full" {
		t.Fatalf("Get of a session made before Redis filled = %v, %v; want it served", got, err)
	}
}

// TestFullRedisTouchPause: in a full Redis a session's touch fails and
// the session is served anyway; the touches then pause, so that every
// request of every session due for one does not cost the Redis in trouble
// a failed transaction and a message to every replica (seven commands a
// request, and the replicas' caches emptied). Once the pause is over a
// touch is tried again, and lands when Redis has room.
func TestFullRedisTouchPause(t *testing.T) {
	m, now, c := fullRedisManager(t)
	ctx := context.Background()
	s, err := m.Create(ctx, Identity{OpenID: "o-paused", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	commands := func() int {
		t.Helper()
		info, err := c.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		t.Fatal("no total_commands_processed in INFO stats")
		return 0
	}
	fillers := fill(t, c)
	*now = now.Add(2 * touchEvery)
	get := func() *Session {
		t.Helper()
		got, err := m.Get(ctx, s.ID)
		if err != nil {
			t.Fatalf("Get in a full Redis: %v", err)
		}
		return got
	}
	get() // the touch fails
	before := commands()
	const n = 50
	for range n {
		get()
	}
	// One INFO, and at most a read per Get (the cache's windows turn
	// with the wall clock); a touch tried costs seven.
	if used := commands() - before - 1; used > n {
		t.Errorf("%d Gets of a session due for a touch sent %d commands to the full Redis, want at most one each", n, used)
	}
	// Room again, and the pause over: the touch lands.
	if err := c.Del(ctx, fillers...).Err(); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(touchPause)
	if got := get(); !got.LastSeen.Equal(*now) {
		t.Errorf("after the pause, LastSeen = %v, want the touch at %v", got.LastSeen, *now)
	}
}

// fullRedisManager is a Manager, on its own clock, over a redis-server
// with 4 MB of memory under noeviction, and a plain client of that
// server.
func fullRedisManager(t *testing.T) (*Manager, *time.Time, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	store, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, KeyPrefix: "full:", Timeout: 5 * time.Second}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := Config{}
	cfg.SetDefaults()
	m := NewManager(store, cfg)
	now := time.Now()
	m.Now = func() time.Time { return now }
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return m, &now, c
}

// fill writes 512-byte values to c until Redis refuses one for its
// memory, and returns their keys.
func fill(t *testing.T, c *redis.Client) []string {
	t.Helper()
	filler := strings.Repeat("x", 512)
	var keys []string
	for i := 0; ; i++ {
		k := "filler:" + strconv.Itoa(i)
		err := c.Set(context.Background(), k, filler, 0).Err()
		if err != nil {
			if !strings.Contains(err.Error(), "OOM") {
				t.Fatalf("filling Redis: %v", err)
			}
			return keys
		}
		if i > 100000 {
			t.Fatal("Redis never filled up")
		}
		keys = append(keys, k)
	}
}
