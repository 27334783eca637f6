package wechat_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

func newHolder(t *testing.T, source string) (*wechat.Holder, *wechatsim.Server, *time.Time) {
	t.Helper()
	sim := wechatsim.New(wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	now := time.Now()
	h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: srv.URL}), wechat.App{AppID: oaID, Secret: oaSecret},
		session.NewMemory(0), wechat.HolderConfig{
			Source:     source,
			IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
			Now:        func() time.Time { return now },
		})
	return h, sim, &now
}

func TestHolderSources(t *testing.T) {
	for _, tc := range []struct{ source, path string }{
		{"stable_token", "/cgi-bin/stable_token"},
		{"token", "/cgi-bin/token"},
	} {
		t.Run(tc.source, func(t *testing.T) {
			h, sim, now := newHolder(t, tc.source)
			ctx := context.Background()
			var wg sync.WaitGroup
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := h.Get(ctx); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if n := sim.Calls()[tc.path]; n != 1 {
				t.Errorf("%s calls = %d, want 1", tc.path, n)
			}
			t1, _ := h.Get(ctx)
			// Within 5 minutes of expiry a new token is fetched ahead.
			*now = now.Add(2*time.Hour - 4*time.Minute)
			sim.Advance(2*time.Hour - 4*time.Minute)
			t2, err := h.Get(ctx)
			if err != nil || t2.AccessToken == t1.AccessToken || sim.Calls()[tc.path] != 2 {
				t.Errorf("ahead of expiry: err %v, new token %v, calls %d", err, t2 != nil && t2.AccessToken != t1.AccessToken, sim.Calls()[tc.path])
			}
		})
	}
}

func TestHolderInvalidate(t *testing.T) {
	h, sim, _ := newHolder(t, "stable_token")
	ctx := context.Background()
	old, _ := h.Get(ctx)
	t2, refreshed, err := h.Invalidate(ctx, old.AccessToken)
	if err != nil || !refreshed || t2.AccessToken == old.AccessToken {
		t.Fatalf("Invalidate(current) = %v, %v", refreshed, err)
	}
	t3, refreshed, err := h.Invalidate(ctx, old.AccessToken)
	if err != nil || refreshed || t3.AccessToken != t2.AccessToken {
		t.Errorf("Invalidate(stale) = %v, %v; want the current token untouched", refreshed, err)
	}
	if n := sim.Calls()["/cgi-bin/stable_token"]; n != 2 {
		t.Errorf("stable_token calls = %d, want 2 (one fetch, one forced)", n)
	}
	// Forced refreshes within 30 s of each other: WeChat's limit holds.
	t4, _, _ := h.Invalidate(ctx, t2.AccessToken)
	if t4.AccessToken != t2.AccessToken {
		t.Error("a second forced refresh within 30 s replaced the token")
	}
}
