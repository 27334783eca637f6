package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
)

// bothStores runs f on a memory store and on a Redis store.
func bothStores(t *testing.T, f func(t *testing.T, s Store)) { bothStoresWith(t, nil, f) }

// bothStoresWith is bothStores with extra redis-server arguments.
func bothStoresWith(t *testing.T, redisArgs []string, f func(t *testing.T, s Store)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemory(10*time.Millisecond)) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redisArgs...)
		// A generous timeout: these tests are about what is stored, on a
		// machine that may be busy.
		r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, KeyPrefix: "index-test:", Timeout: 5 * time.Second}, make([]byte, 32))
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
		is := issuerOn(t, s, TokenConfig{AccessTTL: time.Minute, RefreshTTL: 2 * time.Second, ReuseGrace: time.Second})
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
		members, _ := s.Members(ctx, userIndex("o-rotating"))
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
		is := issuerOn(t, s, TokenConfig{})
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
		members, _ := s.Members(ctx, userIndex("o-shortened"))
		if !slices.Contains(members, "f:"+f.ID) {
			t.Errorf("the user's index expired with the session (%v) while the family lives: the admin API cannot revoke it", members)
		}
	})
}

// testClock is a clock that tests move by hand.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time          { return c.t }
func (c *testClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestUserIndexBounded: 6,000 logins of one person (a script, or a WeChat
// browser that drops its cookies), from 8 replicas' worth of concurrent
// callers, leave at most max_logins_per_user entries in the person's
// indexes and exactly as many live sessions, every one of them listed: the
// ones pushed out are really ended, not just unlisted, so an admin's
// revocation still reaches every live session (issue 9). Before, the index
// held all 6,000 and the memory store's snapshot grew past 1 MB.
func TestUserIndexBounded(t *testing.T) {
	const logins, limit, workers = 6000, 100, 8
	// Without a sync to disk on every write (redistest's default), which
	// would make this test about the disk.
	bothStoresWith(t, []string{"--appendonly", "no"}, func(t *testing.T, s Store) {
		ctx := context.Background()
		m := NewManager(s, Config{TTL: time.Hour, IdleTTL: time.Hour, MaxLoginsPerUser: limit})
		// Every reading of the clock is a millisecond later, so no two
		// sessions end at once.
		start, ticks := time.Now(), atomic.Int64{}
		m.Now = func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Millisecond) }
		id := Identity{OpenID: "o-script", UnionID: "u-script", Scope: "snsapi_base"}
		ids := make([]string, logins)
		each(t, logins, workers, func(i int) error {
			sess, err := m.Create(ctx, id, nil)
			if err == nil {
				ids[i] = sess.ID
			}
			return err
		})
		live := storedSessions(t, s)
		if len(live) > limit || len(live) < limit/2 {
			// Concurrent logins may each end a different login in the
			// openid and the unionid index, so a few fewer than the cap
			// may be left, never more.
			t.Errorf("%d of %d logins alive, want at most max_logins_per_user = %d (and most of them)", len(live), logins, limit)
		}
		for _, u := range []string{id.OpenID, id.UnionID} {
			listed, _ := s.Members(ctx, userIndex(u))
			if len(listed) > limit {
				t.Errorf("index of %s after %d logins: %d entries, want at most %d", u, logins, len(listed), limit)
			}
			for _, key := range live {
				if !slices.Contains(listed, "s:"+key) {
					t.Errorf("session %s is alive but missing from the index of %s: a revocation would miss it", key, u)
				}
			}
		}
		if _, err := m.Get(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
			t.Errorf("the first login, nearest its end: Get = %v, want ErrNotFound", err)
		}
		if mem, ok := s.(*Memory); ok {
			path := t.TempDir() + "/snapshot"
			if _, err := mem.SaveSnapshot(path, OriginServe); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Size() > 64<<10 {
				t.Errorf("memory store after %d logins of one person: snapshot of %d bytes (%v), want at most 64 KiB", logins, fi.Size(), err)
			} else {
				t.Logf("snapshot: %d bytes", fi.Size())
			}
		}
	})
}

// storedSessions returns the keys of the sessions s holds.
func storedSessions(t *testing.T, s Store) []string {
	t.Helper()
	var keys []string
	switch s := s.(type) {
	case *Memory:
		now := time.Now().UnixNano()
		s.d.mu.RLock()
		for k, e := range s.d.values {
			if key, ok := strings.CutPrefix(k, sessionPrefix); ok && now <= e.exp {
				keys = append(keys, key)
			}
		}
		s.d.mu.RUnlock()
	case *Redis:
		all, err := s.c.Keys(context.Background(), s.prefix+sessionPrefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range all {
			keys = append(keys, strings.TrimPrefix(k, s.prefix+sessionPrefix))
		}
	default:
		t.Fatalf("no way to list the sessions of a %T", s)
	}
	return keys
}

// each runs f(0..n-1) on workers goroutines and fails t at the first error.
func each(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestUserIndexDropsEnded: entries of sessions past their end leave the
// index at the next login of that person, without reading the sessions.
func TestUserIndexDropsEnded(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		clock := &testClock{t: time.Now()}
		m := NewManager(s, Config{TTL: time.Hour, IdleTTL: time.Hour})
		m.Now = clock.now
		id := Identity{OpenID: "o-returning", Scope: "snsapi_base"}
		for range 50 {
			if _, err := m.Create(ctx, id, nil); err != nil {
				t.Fatal(err)
			}
		}
		clock.advance(time.Hour + time.Second)
		last, err := m.Create(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.Members(ctx, userIndex(id.OpenID))
		if want := []string{"s:" + last.Key}; !slices.Equal(got, want) {
			t.Errorf("index an hour after 50 one-hour sessions, then a login: %d entries, want only the new one", len(got))
		}
	})
}

// TestUserIndexKeepsIdleSlidingSessions: a session in use lives past
// idle_ttl (up to ttl), and its entry, listed until ttl, stays as long as
// it does; otherwise a revocation would miss a live session.
func TestUserIndexKeepsIdleSlidingSessions(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		clock := &testClock{t: time.Now()}
		m := NewManager(s, Config{TTL: 3 * time.Hour, IdleTTL: time.Hour})
		m.Now = clock.now
		id := Identity{OpenID: "o-daily", Scope: "snsapi_base"}
		used, err := m.Create(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		for step := 1; step <= 3; step++ {
			clock.advance(50 * time.Minute)
			if _, err := m.Get(ctx, used.ID); err != nil {
				t.Fatalf("after %d×50m of use: %v", step, err)
			}
			if _, err := m.Create(ctx, id, nil); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Members(ctx, userIndex(id.OpenID)); !slices.Contains(got, "s:"+used.Key) {
				t.Fatalf("after %d×50m of use the live session left its index", step)
			}
		}
	})
}

// TestUserIndexCapEndsNearestEnd: beyond the cap the logins nearest their
// end are ended, whatever their kind; a token family, which lives a month
// from its last rotation, outlasts a newer week-long browser session. The
// login just made is never the one ended.
func TestUserIndexCapEndsNearestEnd(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		clock := &testClock{t: time.Now()}
		is := issuerOn(t, s, TokenConfig{})
		is.Now, is.MaxLoginsPerUser = clock.now, 2
		m := NewManager(s, Config{TTL: 168 * time.Hour, IdleTTL: 24 * time.Hour, MaxLoginsPerUser: 2})
		m.Now = clock.now
		id := Identity{OpenID: "o-mixed", Scope: "snsapi_base"}
		pair, err := is.Login(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Minute)
		first, _ := m.Create(ctx, id, nil)
		clock.advance(time.Minute)
		second, _ := m.Create(ctx, id, nil)
		if _, err := m.Get(ctx, first.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("the session nearest its end, beyond the cap: Get = %v, want ErrNotFound", err)
		}
		if _, err := m.Get(ctx, second.ID); err != nil {
			t.Errorf("the login just made: Get = %v", err)
		}
		if _, err := is.Authenticate(ctx, pair.AccessToken); err != nil {
			t.Errorf("the family, ending later than the sessions: %v", err)
		}
		// A third login, a family: the session ends first, so it goes.
		clock.advance(time.Minute)
		if _, err := is.Login(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(ctx, second.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("a third login: the session nearest its end: Get = %v, want ErrNotFound", err)
		}
		if got, _ := s.Members(ctx, userIndex(id.OpenID)); len(got) != 2 {
			t.Errorf("index = %v, want the 2 families", got)
		}
		// A browser login now ends before both families, but it is the one
		// just made: the older family goes instead.
		clock.advance(time.Minute)
		third, err := m.Create(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(ctx, third.ID); err != nil {
			t.Errorf("the login just made, nearest its end: Get = %v; want it kept", err)
		}
		if _, err := is.Authenticate(ctx, pair.AccessToken); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("the older family, beyond the cap: Authenticate = %v, want ErrInvalidToken", err)
		}
	})
}
