package session

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func newManager(t *testing.T) (*Manager, *time.Time) {
	t.Helper()
	cfg := Config{TTL: 10 * time.Hour, IdleTTL: time.Hour}
	cfg.SetDefaults()
	m := NewManager(NewMemory(0), cfg)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Now = func() time.Time { return now }
	return m, &now
}

func TestSessionLifetimes(t *testing.T) {
	ctx := context.Background()
	m, now := newManager(t)
	s, err := m.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := m.Create(ctx, Identity{OpenID: "o1"}, nil)
	if s.ID == s2.ID || !ValidID(s.ID) {
		t.Fatalf("IDs %q and %q: want distinct valid IDs", s.ID, s2.ID)
	}
	// Used every 50 minutes, it lives until the absolute end.
	for i := 0; i < 11; i++ {
		*now = now.Add(50 * time.Minute)
		_, err := m.Get(ctx, s.ID)
		if at := time.Duration(i+1) * 50 * time.Minute; at < 10*time.Hour {
			if err != nil {
				t.Fatalf("Get at %s: %v", at, err)
			}
		} else if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get past the absolute ttl (%s): %v, want ErrNotFound", at, err)
		}
	}
	// Idle for over an hour, it ends.
	s3, _ := m.Create(ctx, Identity{OpenID: "o3"}, nil)
	*now = now.Add(61 * time.Minute)
	if _, err := m.Get(ctx, s3.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after idle: %v, want ErrNotFound", err)
	}
}

func TestMalformedIDsNeverTouchSessions(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	s, _ := m.Create(ctx, Identity{OpenID: "o1"}, nil)
	for _, bad := range []string{"", "x", s.ID + "x", s.ID[:len(s.ID)-1] + "!", Hash(s.ID), "../../etc/passwd"} {
		if _, err := m.Get(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", bad, err)
		}
		if err := m.Delete(ctx, bad); err != nil {
			t.Errorf("Delete(%q) = %v", bad, err)
		}
	}
	if _, err := m.Get(ctx, s.ID); err != nil {
		t.Errorf("the real session was lost: %v", err)
	}
}

func TestPendingAndClaim(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	state := NewState()
	if !ValidState(state) {
		t.Fatalf("NewState() = %q, not 32 alphanumerics", state)
	}
	binding := NewID()
	if err := m.SavePending(ctx, state, &Pending{ReturnURL: "/x", Scope: "snsapi_base", Flow: "oa", Binding: Hash(binding)}); err != nil {
		t.Fatal(err)
	}
	p, err := m.Pending(ctx, state)
	if err != nil || p.ReturnURL != "/x" {
		t.Fatalf("Pending = %+v, %v", p, err)
	}
	if !p.BoundTo(binding) || p.BoundTo(NewID()) || p.BoundTo("") {
		t.Error("BoundTo accepts the wrong cookie or refuses the right one")
	}
	if ok, _ := m.Claim(ctx, state); !ok {
		t.Error("first Claim = false")
	}
	if ok, _ := m.Claim(ctx, state); ok {
		t.Error("second Claim = true: a state was usable twice")
	}
	if _, err := m.Pending(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pending(malformed) = %v", err)
	}
}

// refreshBetween is a store that, once armed, saves a refreshed token
// right after the next read of key: a background refresh landing between
// a request's read of its session and that request's touch.
type refreshBetween struct {
	Store
	key   string
	armed bool
	write func(old []byte) []byte
}

func (r *refreshBetween) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := r.Store.Get(ctx, key)
	if err == nil && r.armed && key == r.key {
		r.armed = false
		if _, err := r.Store.Replace(ctx, key, r.write(b), time.Hour); err != nil {
			return nil, err
		}
	}
	return b, err
}

func TestTouchKeepsARefreshMadeSinceTheRead(t *testing.T) {
	ctx := context.Background()
	cfg := Config{TTL: 10 * time.Hour, IdleTTL: time.Hour}
	cfg.SetDefaults()
	store := &refreshBetween{Store: NewMemory(0)}
	m := NewManager(store, cfg)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Now = func() time.Time { return now }
	s, err := m.Create(ctx, Identity{OpenID: "o1"}, &Tokens{AccessToken: "old", ExpiresAt: now.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	store.key, store.armed = sessionPrefix+s.Key, true
	store.write = func(old []byte) []byte {
		var fresh Session
		_ = json.Unmarshal(old, &fresh)
		fresh.Tokens = &Tokens{AccessToken: "refreshed", ExpiresAt: now.Add(2 * time.Hour)}
		b, _ := json.Marshal(fresh)
		return b
	}
	now = now.Add(2 * touchEvery) // the next Get touches
	if _, err := m.Get(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	got, err := m.GetByKey(ctx, s.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens == nil || got.Tokens.AccessToken != "refreshed" {
		t.Errorf("after a touch that raced a refresh the stored token is %+v; want the refreshed one", got.Tokens)
	}
	// The touch that lost is not lost for good: the next request touches.
	if _, err := m.Get(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.GetByKey(ctx, s.Key); !got.LastSeen.Equal(now) {
		t.Errorf("LastSeen after the next request = %s, want %s", got.LastSeen, now)
	}
}

// TestRaisedTTLDoesNotOutliveTheIndex: a session keeps the end it got at
// login when [session] ttl is raised later, so revoke-all, which finds
// sessions by their index entries (kept until that end), still reaches
// every session that lives.
func TestRaisedTTLDoesNotOutliveTheIndex(t *testing.T) {
	ctx := context.Background()
	store := NewMemory(0)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	manager := func(ttl time.Duration) *Manager {
		cfg := Config{TTL: ttl, IdleTTL: 24 * time.Hour}
		cfg.SetDefaults()
		m := NewManager(store, cfg)
		m.Now = func() time.Time { return now }
		return m
	}
	before := manager(time.Hour)
	s, err := before.Create(ctx, Identity{OpenID: "o-ttl"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := manager(10 * time.Hour) // the operator raised ttl and restarted
	now = now.Add(90 * time.Minute)
	if _, err := after.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get 90m into a 1h session after ttl went to 10h = %v, want ErrNotFound", err)
	}
	// Lowering ttl still shortens sessions.
	s2, _ := after.Create(ctx, Identity{OpenID: "o-ttl"}, nil)
	now = now.Add(2 * time.Hour)
	if _, err := manager(time.Hour).Get(ctx, s2.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get 2h into a 10h session after ttl went to 1h = %v, want ErrNotFound", err)
	}
}
