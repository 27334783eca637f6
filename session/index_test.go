package session

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
)

// bothStores runs f on a memory store and on a Redis store.
func bothStores(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemory(10*time.Millisecond)) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, KeyPrefix: "index-test:"}, make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		f(t, r)
	})
}

// TestReplaceOwnsItsKey: Replace copies the key too. A Go map assignment to
// an existing string key stores the caller's key string, so a key that
// aliases a reused buffer would change under the map.
func TestReplaceOwnsItsKey(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Set(ctx, "owned-key-AAAA", []byte("v1"), time.Minute); err != nil {
			t.Fatal(err)
		}
		buf := []byte("owned-key-AAAA")
		if ok, err := s.Replace(ctx, aliased(buf), []byte("v2"), time.Minute); !ok || err != nil {
			t.Fatalf("Replace(present) = %v, %v", ok, err)
		}
		overwrite(buf)
		if _, err := s.Get(ctx, string(buf)); err == nil {
			t.Errorf("the value answers to the caller's overwritten buffer %q", buf)
		}
		if v, err := s.Get(ctx, "owned-key-AAAA"); err != nil || string(v) != "v2" {
			t.Errorf("Get(the key as replaced) = %q, %v; want v2", v, err)
		}
	})
}

// TestUserIndexKeepsEveryLiveFamily: DELETE /sessions?openid= finds a
// person's token families through the user index. A family lives as long as
// it keeps rotating, so every rotation lists it again; otherwise a family
// refreshed in time would outlive its entry and the admin's revocation
// would miss it. Scaled down: refresh_ttl 2s, one refresh after 1.2s,
// checked at 2.4s (real time: the Redis TTL cannot be faked).
func TestUserIndexKeepsEveryLiveFamily(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		pemKey, _ := GenerateKey(ES256)
		ks, err := ParseKeys(pemKey)
		if err != nil {
			t.Fatal(err)
		}
		is := NewIssuer(s, ks, iss, TokenConfig{AccessTTL: time.Minute, RefreshTTL: 2 * time.Second, ReuseGrace: time.Second})
		p, err := is.Login(ctx, Identity{OpenID: "o-rotating", Scope: "miniprogram"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond)
		p, err = is.Refresh(ctx, p.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond)
		f, err := is.Authenticate(ctx, p.AccessToken)
		if err != nil {
			t.Fatalf("the family, refreshed in time, is gone: %v", err)
		}
		members, _ := s.Members(ctx, UserIndex("o-rotating"))
		if !slices.Contains(members, "f:"+f.ID) {
			t.Errorf("a live family is missing from its user's index (%v): the admin API cannot revoke it", members)
		}
	})
}

// TestUserIndexIsNotShortened: adding a member only ever lengthens the
// index's life. A browser login (session ttl, 168h by default) after a
// mini-program login (refresh_ttl, 720h) must not cut the user's index to
// 168h while the token family lives on. Scaled down: a 1s session after a
// family of the default lifetime.
func TestUserIndexIsNotShortened(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		pemKey, _ := GenerateKey(ES256)
		ks, err := ParseKeys(pemKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg := TokenConfig{}
		cfg.SetDefaults()
		is := NewIssuer(s, ks, iss, cfg)
		id := Identity{OpenID: "o-shortened", Scope: "miniprogram"}
		p, err := is.Login(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := NewManager(s, Config{TTL: time.Second, IdleTTL: time.Second})
		if _, err := m.Create(ctx, Identity{OpenID: "o-shortened", Scope: "snsapi_base"}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1300 * time.Millisecond)
		f, err := is.Authenticate(ctx, p.AccessToken)
		if err != nil {
			t.Fatalf("the family ended: %v", err)
		}
		members, _ := s.Members(ctx, UserIndex("o-shortened"))
		if !slices.Contains(members, "f:"+f.ID) {
			t.Errorf("the user's index expired with the session (%v) while the family lives: the admin API cannot revoke it", members)
		}
	})
}
