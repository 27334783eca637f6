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
	ctx := context.Background()
	s, err := m.Create(ctx, Identity{OpenID: "o-before-full", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Fill Redis until it refuses.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	filler := strings.Repeat("x", 512)
	for i := 0; ; i++ {
		err := c.Set(ctx, "filler:"+strconv.Itoa(i), filler, 0).Err()
		if err != nil {
			if !strings.Contains(err.Error(), "OOM") {
				t.Fatalf("filling Redis: %v", err)
			}
			break
		}
		if i > 100000 {
			t.Fatal("Redis never filled up")
		}
	}
	if _, err := m.Create(ctx, Identity{OpenID: "o-after-full", Scope: "snsapi_base"}, nil); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Create in a full Redis = %v, want a store error", err)
	}
	now = now.Add(2 * touchEvery) // due for a touch
	got, err := m.Get(ctx, s.ID)
	if err != nil || got.Identity.OpenID != "o-before-full" {
		t.Fatalf("Get of a session made before Redis filled = %v, %v; want it served", got, err)
	}
}
