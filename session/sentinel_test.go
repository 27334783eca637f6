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

// TestRedisSentinelStore runs the Store suite through Sentinels, then
// kills the master: calls fail as ErrUnavailable (never ErrNotFound) until
// a replica is promoted, and every value written before the kill and
// replicated is there afterwards.
func TestRedisSentinelStore(t *testing.T) {
	sn := redistest.StartSentinel(t)
	r, err := NewRedis(RedisConfig{Addrs: sn.Addrs, MasterName: sn.MasterName, Timeout: 300 * time.Millisecond}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	testStore(t, r)

	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if err := r.Set(ctx, fmt.Sprint("kept-", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	sn.Synced(t)
	killed := time.Now()
	sn.Master.Kill()
	var failures int
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := r.Get(ctx, "kept-0")
		if err == nil {
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("during the failover: %v, want ErrUnavailable", err)
		}
		failures++
		if time.Now().After(deadline) {
			t.Fatalf("no master 15s after the kill: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("store back %s after the kill (%d failed reads)", time.Since(killed).Round(time.Millisecond), failures)
	for i := 0; i < 50; i++ {
		if _, err := r.Get(ctx, fmt.Sprint("kept-", i)); err != nil {
			t.Errorf("kept-%d after the failover: %v", i, err)
		}
	}
	if err := r.Set(ctx, "after", []byte("v"), time.Minute); err != nil {
		t.Errorf("write on the new master: %v", err)
	}
}

// TestRedisWaitReplicas: with wait_replicas, a write the replica cannot
// take (it hangs) fails instead of being confirmed, so a failover cannot
// lose a login or a logout the gateway reported done; a confirmed write is
// on the replica.
func TestRedisWaitReplicas(t *testing.T) {
	sn := redistest.StartSentinel(t)
	// A replica just attached may take longer than wait_timeout for its
	// first acknowledgement on a busy machine (the race detector with other
	// packages' tests): the test is about a hung replica, not that one.
	sn.Synced(t)
	// Generous for a loaded CI machine; a LAN replica acknowledges in
	// about a millisecond.
	cfg := RedisConfig{Addrs: sn.Addrs, MasterName: sn.MasterName, WaitReplicas: 1, WaitTimeout: 400 * time.Millisecond, Timeout: time.Second}
	r, err := NewRedis(cfg, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	replica := redis.NewClient(&redis.Options{Addr: sn.Replica.Addr})
	t.Cleanup(func() { replica.Close() })
	ctx := context.Background()
	onReplica := func(key string) bool { return replica.Exists(ctx, r.prefix+key).Val() == 1 }

	if err := r.Set(ctx, "confirmed", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if !onReplica("confirmed") {
		t.Error("a confirmed write is not on the replica")
	}
	_ = r.Set(ctx, "logged-in", []byte("v"), time.Hour)

	sn.Replica.Pause()
	defer sn.Replica.Resume()
	for name, write := range map[string]func() error{
		"Set":     func() error { return r.Set(ctx, "lost", []byte("v"), time.Hour) },
		"SetNX":   func() error { won, err := r.SetNX(ctx, "lease", []byte("v"), time.Hour); return errIf(won, err) },
		"Replace": func() error { ok, err := r.Replace(ctx, "confirmed", []byte("v2"), time.Hour); return errIf(ok, err) },
		"Delete":  func() error { return r.Delete(ctx, "logged-in") },
	} {
		start := time.Now()
		if err := write(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the replica hung = %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > cfg.Timeout {
			t.Errorf("%s took %s, want about wait_timeout (%s)", name, d, cfg.WaitTimeout)
		}
	}
	// Reads do not wait.
	if _, err := r.Get(ctx, "confirmed"); err != nil {
		t.Errorf("Get with the replica hung: %v", err)
	}
	sn.Replica.Resume()
	if err := r.Set(ctx, "again", []byte("v"), time.Hour); err != nil {
		t.Errorf("Set with the replica back: %v", err)
	}
	if ok, err := r.Replace(ctx, "absent", []byte("v"), time.Hour); ok || err != nil {
		t.Errorf("Replace(absent) = %v, %v; want false, nil", ok, err)
	}
}

// errIf makes a write's "done" without an error an error: the test wants
// every write refused.
func errIf(done bool, err error) error {
	if err == nil && done {
		return errors.New("done")
	}
	return err
}

// TestRedisSentinelPassword: Sentinels with their own password (their
// requirepass) in front of a master with another: the store needs both,
// and no error shows either.
func TestRedisSentinelPassword(t *testing.T) {
	sn := redistest.StartSentinelAuth(t, "master-pw-123", "sentinel-pw-456")
	t.Setenv("WXGATE_TEST_REDIS_PW", "master-pw-123")
	t.Setenv("WXGATE_TEST_SENTINEL_PW", "sentinel-pw-456")
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cfg     RedisConfig
		wantErr bool
	}{
		{"both", RedisConfig{PasswordEnv: "WXGATE_TEST_REDIS_PW", SentinelPasswordEnv: "WXGATE_TEST_SENTINEL_PW"}, false},
		{"no sentinel password", RedisConfig{PasswordEnv: "WXGATE_TEST_REDIS_PW"}, true},
		{"no master password", RedisConfig{SentinelPasswordEnv: "WXGATE_TEST_SENTINEL_PW"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Addrs, tc.cfg.MasterName = sn.Addrs, sn.MasterName
			r, err := NewRedis(tc.cfg, make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			err = r.Set(ctx, "k", []byte("v"), time.Minute)
			if tc.wantErr != (err != nil) {
				t.Fatalf("Set = %v, want an error: %v", err, tc.wantErr)
			}
			if err != nil && (!errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "-pw-")) {
				t.Errorf("Set = %v, want ErrUnavailable without a password in it", err)
			}
		})
	}
}
