package session

import (
	"context"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
)

// TestUpdateFamilyRacingRotation: a background WeChat-token save
// (UpdateFamily) reads the family, the client rotates its pair meanwhile,
// then the save writes: it must not write back the family it read, which
// would lose the rotation and refuse the client's new refresh token (the
// user logged out). The save lands too.
func TestUpdateFamilyRacingRotation(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"memory": func(*testing.T) Store { return NewMemory(0) },
		"redis": func(t *testing.T) Store {
			srv := redistest.Start(t, "--appendonly", "no")
			r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}}, make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			return r
		},
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			is, _ := newIssuer(t, ES256)
			is.store = store(t)
			ctx := context.Background()
			p, err := is.Login(ctx, Identity{OpenID: "o1", Scope: "app"}, &Tokens{AccessToken: "a1", ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			f, err := is.Authenticate(ctx, p.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			var rotated *Pair
			if _, err := is.UpdateFamily(ctx, f.ID, func(f *Family) {
				f.Tokens = &Tokens{AccessToken: "a2", ExpiresAt: time.Now().Add(2 * time.Hour)}
				if rotated == nil {
					rotated, err = is.Refresh(ctx, p.RefreshToken) // between the read and the write
					if err != nil {
						t.Fatal(err)
					}
				}
			}); err != nil {
				t.Fatal(err)
			}
			if f, err := is.Family(ctx, f.ID); err != nil || f.Tokens.AccessToken != "a2" {
				t.Errorf("family after the save: %v, %v; want the saved WeChat token", f, err)
			}
			if _, err := is.Refresh(ctx, rotated.RefreshToken); err != nil {
				t.Errorf("refresh with the rotated token after a WeChat-token save raced the rotation: %v", err)
			}
		})
	}
}
