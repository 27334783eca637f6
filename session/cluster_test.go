package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wxgate/wxgate/internal/redistest"
)

// TestRedisClusterStore runs the Store conformance suite, and the
// session, index and token-family flows built on it, on a three-master
// Redis Cluster: with every node listed, and with one seed address and
// cluster = true (a managed Cluster's configuration endpoint).
func TestRedisClusterStore(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	for _, tc := range []struct {
		name string
		cfg  RedisConfig
	}{
		{"every node", RedisConfig{Addrs: c.Addrs}},
		{"one seed", RedisConfig{Addrs: c.Addrs[:1], Cluster: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.KeyPrefix = "t" + strings.ReplaceAll(tc.name, " ", "-") + ":"
			r, err := NewRedis(tc.cfg, make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			testStore(t, r)
			t.Run("sessions", func(t *testing.T) { clusterSessions(t, r) })
			t.Run("token families", func(t *testing.T) { clusterFamilies(t, r) })
			// The suite proves something only if its keys did not all
			// land on one node.
			for i, addr := range c.Addrs {
				n := redis.NewClient(&redis.Options{Addr: addr})
				keys, err := n.Keys(context.Background(), tc.cfg.KeyPrefix+"*").Result()
				n.Close()
				if err != nil || len(keys) == 0 {
					t.Errorf("node %d holds no key of the suite (%v): the Cluster was not exercised", i+1, err)
				}
			}
		})
	}
}

// clusterSessions: a session is created, indexed by person, found,
// updated and revoked with the rest of that person's logins.
func clusterSessions(t *testing.T, s Store) {
	ctx := context.Background()
	m := NewManager(s, Config{TTL: time.Hour, IdleTTL: time.Hour, RefreshAhead: time.Minute})
	var keys []string
	for i := 0; i < 20; i++ {
		ss, err := m.Create(ctx, Identity{OpenID: "o-cluster", UnionID: "u-cluster", Scope: "snsapi_base"}, &Tokens{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Get(ctx, ss.ID)
		if err != nil || got.Identity.OpenID != "o-cluster" {
			t.Fatalf("Get: %+v, %v", got, err)
		}
		if err := m.Update(ctx, got); err != nil {
			t.Fatalf("Update: %v", err)
		}
		keys = append(keys, "s:"+ss.Key)
	}
	members, err := s.Members(ctx, userIndex("u-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !contains(members, k) {
			t.Errorf("the person's index lacks %s", k)
		}
	}
	if with, err := m.WithTokens(ctx); err != nil || len(with) < len(keys) {
		t.Errorf("WithTokens = %d keys, %v; want at least %d", len(with), err, len(keys))
	}
	for _, k := range keys {
		if err := m.DeleteByKey(ctx, strings.TrimPrefix(k, "s:")); err != nil {
			t.Fatal(err)
		}
		if _, err := m.GetByKey(ctx, strings.TrimPrefix(k, "s:")); !errors.Is(err, ErrNotFound) {
			t.Errorf("session after delete: %v", err)
		}
	}
}

// clusterFamilies: token pairs rotate, reuse revokes, one of concurrent
// refreshes wins, session_keys round-trip.
func clusterFamilies(t *testing.T, s Store) {
	ctx := context.Background()
	is, _ := newIssuer(t, ES256)
	is.store = s
	p, err := is.Login(ctx, Identity{OpenID: "o-fam", UnionID: "u-fam", Scope: "miniprogram"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2 := raceRefresh(t, is, p.RefreshToken, 20)
	if _, err := is.Authenticate(ctx, p2.AccessToken); err != nil {
		t.Fatalf("the new access token: %v", err)
	}
	members, _ := s.Members(ctx, userIndex("u-fam"))
	if len(members) != 1 || !strings.HasPrefix(members[0], "f:") {
		t.Errorf("index of u-fam = %v, want one family", members)
	}
	if err := is.Revoke(ctx, p2.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := is.Authenticate(ctx, p2.AccessToken); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("after revoke: %v, want ErrInvalidToken", err)
	}
	if err := is.SaveSessionKey(ctx, "wx1", "o-fam", "k3y"); err != nil {
		t.Fatal(err)
	}
	if k, err := is.SessionKey(ctx, "wx1", "o-fam"); err != nil || k.Reveal() != "k3y" {
		t.Errorf("SessionKey = %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestRedisModeValidation: settings that go-redis would silently ignore or
// misread are refused at start.
func TestRedisModeValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    RedisConfig
		want string // "" for valid
	}{
		{"standalone db", RedisConfig{Addrs: []string{"a:1"}, DB: 2}, ""},
		{"sentinel db", RedisConfig{Addrs: []string{"a:1", "b:1"}, MasterName: "m", DB: 2}, ""},
		{"cluster db", RedisConfig{Addrs: []string{"a:1", "b:1"}, DB: 2}, "session.redis.db"},
		{"one seed cluster db", RedisConfig{Addrs: []string{"a:1"}, Cluster: true, DB: 1}, "session.redis.db"},
		{"cluster and sentinel", RedisConfig{Addrs: []string{"a:1"}, Cluster: true, MasterName: "m"}, "session.redis.cluster"},
		{"sentinel password", RedisConfig{Addrs: []string{"a:1"}, MasterName: "m", SentinelPasswordEnv: "WXGATE_TEST_KEY"}, ""},
		{"sentinel password alone", RedisConfig{Addrs: []string{"a:1"}, SentinelPasswordEnv: "WXGATE_TEST_KEY"}, "session.redis.sentinel_password_env"},
		{"sentinel password unset", RedisConfig{Addrs: []string{"a:1"}, MasterName: "m", SentinelPasswordEnv: "WXGATE_TEST_UNSET"}, "session.redis.sentinel_password_env"},
		{"wait on sentinel", RedisConfig{Addrs: []string{"a:1"}, MasterName: "m", WaitReplicas: 1}, ""},
		{"wait on cluster", RedisConfig{Addrs: []string{"a:1", "b:1"}, WaitReplicas: 1}, "session.redis.wait_replicas"},
		{"wait negative", RedisConfig{Addrs: []string{"a:1"}, WaitReplicas: -1}, "session.redis.wait_replicas"},
		{"wait longer than a call", RedisConfig{Addrs: []string{"a:1"}, WaitReplicas: 1, WaitTimeout: time.Second}, "session.redis.wait_timeout"},
		{"ipv6 address", RedisConfig{Addrs: []string{"[::1]:6379"}}, ""},
		// go-redis dials these as they are, fails, and logs the address:
		// the password with it, on every attempt.
		{"a redis URL", RedisConfig{Addrs: []string{"redis://:hunter2@redis:6379"}}, "session.redis.addrs: entry 1: a URL"},
		{"a rediss URL, second", RedisConfig{Addrs: []string{"a:1", "rediss://u:hunter2@redis:6380/0"}}, "session.redis.addrs: entry 2: a URL"},
		{"user info without a scheme", RedisConfig{Addrs: []string{"default:hunter2@redis:6379"}}, "session.redis.addrs: entry 1: a URL"},
		{"no port", RedisConfig{Addrs: []string{"redis"}}, "session.redis.addrs: entry 1: \"redis\" is not host:port"},
		{"port out of range", RedisConfig{Addrs: []string{"redis:70000"}}, "session.redis.addrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WXGATE_TEST_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
			c := Config{Store: "redis", EncryptionKeyEnv: "WXGATE_TEST_KEY", Redis: tc.r}
			c.SetDefaults()
			err := errors.Join(c.Provision(), c.Validate())
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error about %s", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Errorf("Validate = %v, shows the password", err)
			}
		})
	}
}

// TestRedisClusterFailover: a Cluster master is killed (-9) and its
// replica takes over its slots. Calls for those slots fail as
// ErrUnavailable (never ErrNotFound) meanwhile, and work again within
// seconds of the promotion, every value still there.
func TestRedisClusterFailover(t *testing.T) {
	c := redistest.StartClusterReplicas(t, 3, 1)
	r, err := NewRedis(RedisConfig{Addrs: c.Addrs, Timeout: 300 * time.Millisecond}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx := context.Background()
	const n = 60
	for i := 0; i < n; i++ {
		if err := r.Set(ctx, fmt.Sprint("kept-", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.Masters(t)[1]
	redistest.Synced(t, victim)
	killed := time.Now()
	victim.Kill()

	missing := func() (int, error) {
		var bad int
		var last error
		for i := 0; i < n; i++ {
			if _, err := r.Get(ctx, fmt.Sprint("kept-", i)); err != nil {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("kept-%d during the failover: %v, want ErrUnavailable", i, err)
				}
				bad, last = bad+1, err
			}
		}
		return bad, last
	}
	bad, last := missing()
	if bad == 0 {
		t.Fatal("no call failed with a master dead: the test killed nothing")
	}
	for bad > 0 {
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("%d of %d values still unreachable 15s after the kill: %v", bad, n, last)
		}
		time.Sleep(50 * time.Millisecond)
		bad, last = missing()
	}
	t.Logf("every value back %s after the kill", time.Since(killed).Round(time.Millisecond))
}
