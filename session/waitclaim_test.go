package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
)

// TestRefreshFailedByWaitIsRetryable: with wait_replicas, a refresh whose
// rotation claim (SET NX of the rotated marker) the replicas did not
// acknowledge fails with ErrUnavailable, a 503: the client keeps its
// refresh token and tries again. The master holds the claim, though, so
// before the fix that retry, made once the replica was back and after
// reuse_grace, was taken as reuse of a rotated-out token and revoked the
// family: a replica's outage logged out everyone who refreshed during it.
// A claim reported not won must not stay held.
func TestRefreshFailedByWaitIsRetryable(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	key := make([]byte, 32)
	open := func(wait int) *Redis {
		// No replica: WAIT 1 is always short, as with a lost replica.
		r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, KeyPrefix: "wait-claim:", WaitReplicas: wait, WaitTimeout: 20 * time.Millisecond, Timeout: 2 * time.Second}, key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	short, healthy := open(1), open(0)

	t.Run("SetNX", func(t *testing.T) {
		if won, err := short.SetNX(ctx, "lease", []byte("v"), time.Hour); won || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("SetNX with too few replicas = %v, %v; want false, ErrUnavailable", won, err)
		}
		if won, err := healthy.SetNX(ctx, "lease", []byte("v"), time.Hour); !won || err != nil {
			t.Errorf("SetNX after a SetNX reported not won = %v, %v; want it won (the failed one must not hold the key)", won, err)
		}
		// A key another holds is left alone.
		if won, err := short.SetNX(ctx, "lease", []byte("v"), time.Hour); won {
			t.Fatalf("SetNX of a held key = %v, %v", won, err)
		}
		if _, err := healthy.Get(ctx, "lease"); err != nil {
			t.Errorf("a held lease is gone after another's failed SetNX: %v", err)
		}
	})

	t.Run("refresh", func(t *testing.T) {
		ks := testKeys(t, ES256)
		cfg := TokenConfig{}
		cfg.SetDefaults()
		now := time.Now()
		clock := func() time.Time { return now }
		good, bad := NewIssuer(healthy, ks, iss, cfg), NewIssuer(short, ks, iss, cfg)
		good.Now, bad.Now = clock, clock
		p, err := good.Login(ctx, Identity{OpenID: "o-wait", Scope: "miniprogram"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Refresh(ctx, p.RefreshToken); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Refresh with too few replicas = %v, want ErrUnavailable", err)
		}
		// The replica is back; the client tries again a while later.
		now = now.Add(cfg.ReuseGrace + time.Second)
		if _, err := good.Refresh(ctx, p.RefreshToken); err != nil {
			t.Fatalf("Refresh again after a 503 = %v; want a new pair", err)
		}
	})
}

// failingWrites is a store whose Set and Replace of keys starting with
// prefix fail, as a Redis call that timed out would.
type failingWrites struct {
	Store
	prefix string
}

func (f failingWrites) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if strings.HasPrefix(key, f.prefix) {
		return ErrUnavailable
	}
	return f.Store.Set(ctx, key, v, ttl)
}

func (f failingWrites) AddMember(ctx context.Context, key, m string, until, now time.Time, limit int) ([]string, error) {
	if strings.HasPrefix(key, f.prefix) {
		return nil, ErrUnavailable
	}
	return f.Store.AddMember(ctx, key, m, until, now, limit)
}

func (f failingWrites) Replace(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if strings.HasPrefix(key, f.prefix) {
		return false, ErrUnavailable
	}
	return f.Store.Replace(ctx, key, v, ttl)
}

// TestRefreshFailedMidRotationIsRetryable: a refresh that won the claim on
// its token but could not store the new token, list the family's new end
// in its person's index, or store the family (the store failed: a 503)
// must rotate nothing, so that the client's token is still the family's
// current one, and the claim must not outlive the failure: otherwise the
// client's retry after reuse_grace revokes the family as reuse. (The index
// entry was written after the family, so its failure came after the
// rotation.)
func TestRefreshFailedMidRotationIsRetryable(t *testing.T) {
	for _, failing := range []string{refreshPrefix, familyPrefix, "idx:user:"} {
		t.Run(strings.TrimSuffix(failing, ":"), func(t *testing.T) {
			ctx := context.Background()
			is, now := newIssuer(t, ES256)
			p, err := is.Login(ctx, Identity{OpenID: "o-mid", Scope: "miniprogram"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			healthy := is.store
			is.store = failingWrites{healthy, failing}
			if _, err := is.Refresh(ctx, p.RefreshToken); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Refresh with %s writes failing = %v, want ErrUnavailable", failing, err)
			}
			is.store = healthy
			*now = now.Add(is.cfg.ReuseGrace + time.Second)
			if _, err := is.Refresh(ctx, p.RefreshToken); err != nil {
				t.Fatalf("Refresh again after a 503 = %v; want a new pair", err)
			}
		})
	}
}

// TestIndexEntryWaitsForReplicas: with wait_replicas, a person's index
// entry counts only once the replicas have it, as the login it lists does.
// Before, AddMember did not wait: a failover right after a login could
// keep the session (its write waited) and lose its entry, and the admin's
// DELETE /sessions would then miss a live login.
func TestIndexEntryWaitsForReplicas(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	// No replica: WAIT 1 is always short, as with a lost replica.
	r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, KeyPrefix: "wait-index:", WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond, Timeout: 2 * time.Second}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	now := time.Now()
	if _, err := r.AddMember(ctx, userIndex("o-waited"), "s:k", now.Add(time.Hour), now, 10); !errors.Is(err, ErrUnavailable) {
		t.Errorf("AddMember with too few replicas = %v, want ErrUnavailable", err)
	}
	// The script still runs (EVAL, not a cached EVALSHA, in the pipeline
	// with WAIT: a restarted server has no scripts).
	if got, err := r.Members(ctx, userIndex("o-waited")); err != nil || len(got) != 1 || got[0] != "s:k" {
		t.Errorf("Members = %v, %v; want the entry on the master", got, err)
	}
	if err := r.c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	over, err := r.AddMember(ctx, userIndex("o-waited"), "s:k2", now.Add(2*time.Hour), now, 1)
	if !errors.Is(err, ErrUnavailable) || len(over) != 0 {
		t.Errorf("AddMember after SCRIPT FLUSH = %v, %v; want ErrUnavailable (WAIT), no surplus reported", over, err)
	}
	if got, _ := r.Members(ctx, userIndex("o-waited")); len(got) != 2 {
		t.Errorf("Members after SCRIPT FLUSH = %v, want both entries", got)
	}
}

// landedUnconfirmed stores family writes and then reports them failed, as
// Redis does when WAIT finds too few replicas after the master took the
// write.
type landedUnconfirmed struct{ Store }

func (l landedUnconfirmed) Replace(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := l.Store.Replace(ctx, key, v, ttl)
	if err == nil && strings.HasPrefix(key, familyPrefix) {
		return ok, ErrUnavailable
	}
	return ok, err
}

// TestRefreshWhoseFamilyWriteLandedUnconfirmed: when the rotated family
// reached the store and only its confirmation failed, the old refresh
// token is rotated out for good; a 503 then left the client nothing that
// works (its retry was refused, and past reuse_grace revoked the login).
// It gets the new pair instead.
func TestRefreshWhoseFamilyWriteLandedUnconfirmed(t *testing.T) {
	ctx := context.Background()
	is, now := newIssuer(t, ES256)
	p, err := is.Login(ctx, Identity{OpenID: "o-landed", Scope: "miniprogram"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	healthy := is.store
	is.store = landedUnconfirmed{healthy}
	p2, err := is.Refresh(ctx, p.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh whose family write landed unconfirmed = %v; want the new pair", err)
	}
	is.store = healthy
	*now = now.Add(is.cfg.ReuseGrace + time.Second)
	if _, err := is.Refresh(ctx, p2.RefreshToken); err != nil {
		t.Errorf("the new pair's refresh = %v; want it to work", err)
	}
}
