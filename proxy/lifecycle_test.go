package proxy_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const refreshPath = "/sns/oauth2/refresh_token"

// both moves WeChat's and the gateway's clocks together.
func (e *env) both(d time.Duration) {
	e.sim.Advance(d)
	e.advance(d)
}

func (e *env) refreshes() int { return e.sim.Calls()[refreshPath] }

func TestSnsTokenRefreshedOnUse(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	if n := e.refreshes(); n != 0 {
		t.Fatalf("refreshes right after login = %d", n)
	}
	e.both(2*time.Hour + time.Second)
	// Many requests at once: one refresh, and none of them is redirected.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := b.get("/page", nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("request after the sns token expired: %d, want 200", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if n := e.refreshes(); n != 1 {
		t.Errorf("refresh_token calls = %d, want 1", n)
	}
	// The new token is used: later requests need no refresh.
	b.upstreamView("/page", nil)
	if n := e.refreshes(); n != 1 {
		t.Errorf("refresh_token calls after a fresh token = %d, want 1", n)
	}
	// And WeChat accepts it.
	e.both(time.Hour)
	got := b.upstreamView("/page", nil)
	if first(got.Headers["X-Wechat-Openid"]) != e.user("alice").OpenID {
		t.Errorf("identity after refresh: %v", got.Headers["X-Wechat-Openid"])
	}
}

// TestSnsRefreshTokenExpired: past the refresh_token's life the browser is
// sent through login again (silently, snsapi_base) and ends where it was
// going.
func TestSnsRefreshTokenExpired(t *testing.T) {
	for _, tc := range []struct {
		name    string
		advance func(e *env)
	}{
		// WeChat says 42002 (its clock is past the 30 days; ours only past 2h).
		{"wechat says 42002", func(e *env) { e.sim.Advance(31 * 24 * time.Hour); e.advance(2*time.Hour + time.Second) }},
		// The gateway's own record of the 30-day end.
		{"tracked end", func(e *env) { e.both(31 * 24 * time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOpts(t, envOptions{sessionTTL: "2000h"})
			b := e.browser(weChatUA)
			b.login("/", "carol")
			tc.advance(e)
			start := b.expectRedirect("/orders/7?x=1")
			if !strings.Contains(start, "/_wxgate/start?rd=%2Forders%2F7%3Fx%3D1") {
				t.Fatalf("after the login ended: Location %q, want start", start)
			}
			auth := b.expectRedirect(start)
			if !strings.Contains(auth, "scope=snsapi_base") {
				t.Errorf("re-login asks for %q, want the silent snsapi_base", auth)
			}
			if got := b.expectRedirect(b.authorize(auth, "carol", "allow")); got != e.url+"/orders/7?x=1" {
				t.Errorf("after logging in again: %q, want where it was going", got)
			}
			b.upstreamView("/orders/7?x=1", nil)
		})
	}
}

func TestRefreshSweeper(t *testing.T) {
	e := newEnvOpts(t, envOptions{refreshAhead: "1s"})
	b := e.browser(weChatUA)
	b.login("/", "dan")
	// Within the 5m margin, and no request comes.
	e.both(2*time.Hour - 2*time.Minute)
	// Refreshed and saved: WeChat's count moves when the call arrives, the
	// metric once the new token is stored.
	const saved = `wxgate_token_refreshes_total{kind="sns",result="ok"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.scrape(), saved) {
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper did not refresh the session within 10s (%d refresh calls)", e.refreshes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The request that follows finds a fresh token: no refresh, now or in
	// the background.
	before := e.refreshes()
	b.upstreamView("/", nil)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end) && e.refreshes() == before; {
		time.Sleep(10 * time.Millisecond)
	}
	if e.refreshes() != before {
		t.Error("the request refreshed again after the sweeper had")
	}
}
