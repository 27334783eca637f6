package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// TestRefreshAnswerWithoutToken: WeChat (or a proxy in front of it) answers
// a user-token refresh with HTTP 200 and a JSON body that has no errcode and
// no token ({} or an empty access_token, expires_in 0). That is no token:
// the session keeps its current one, which is still valid, and the failed
// refresh backs off like any other, instead of replacing the token with an
// empty, already expired one and costing a WeChat call per request.
func TestRefreshAnswerWithoutToken(t *testing.T) {
	t.Setenv("WXGATE_SESSION_REFRESH_BACKOFF", "10s")
	for _, body := range []string{`{}`, `{"access_token":"","expires_in":7200}`, `{"access_token":"x","expires_in":0}`, `{"access_token":"x","expires_in":-5}`} {
		t.Run(body, func(t *testing.T) {
			e := newEnv(t)
			b := e.browser(weChatUA)
			b.login("/", "lia")
			before := first(b.upstreamView("/wxtoken/x", nil).Headers["X-Wechat-Access-Token"])
			e.both(2*time.Hour - 2*time.Minute) // inside the margin, still valid
			e.sim.InjectFault(wechatsim.Fault{Path: refreshPath, Body: body, Times: 100})
			for i := 0; i < 10; i++ {
				resp, _ := b.get("/wxtoken/x", nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d after WeChat answered %s: %d, want 200 with the still-valid token", i, body, resp.StatusCode)
				}
				time.Sleep(20 * time.Millisecond) // let a background refresh land
			}
			if got := first(b.upstreamView("/wxtoken/x", nil).Headers["X-Wechat-Access-Token"]); got != before {
				t.Errorf("token passed after WeChat answered %s: %q, want the current %q", body, got, before)
			}
			if n := e.refreshes(); n > 3 {
				t.Errorf("refresh calls = %d after 11 requests, want one attempt (at most 3 calls) then backoff", n)
			}
		})
	}
}

// TestRefreshBackoffAfterClockJump: a failed refresh recorded while the
// gateway's clock ran an hour ahead (a replica's clock, or this one's before
// NTP stepped it back) must not keep the login from refreshing for that
// hour: no backoff is longer than 12 x refresh_backoff (and its jitter), so
// a retry time further ahead is read as none.
func TestRefreshBackoffAfterClockJump(t *testing.T) {
	t.Setenv("WXGATE_SESSION_REFRESH_BACKOFF", "100ms")
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "max")
	e.both(2*time.Hour + time.Second) // expired
	e.advance(time.Hour)              // the gateway's clock runs an hour ahead
	e.sim.InjectFault(wechatsim.Fault{Path: refreshPath, Errcode: -1, Times: 3})
	before := e.refreshes()
	pollUntil(t, 5*time.Second, "the failing refresh", func() bool {
		b.get("/page", nil)
		return e.refreshes() >= before+3
	})
	e.advance(-time.Hour) // stepped back; WeChat answers again
	pollUntil(t, 5*time.Second, "a refresh once the clock is right and WeChat answers", func() bool {
		resp, _ := b.get("/wxtoken/x", nil)
		return resp.StatusCode == http.StatusOK
	})
}

// TestAppTokenDuringARedisOutage: with Redis down, /app-token on each
// replica answers the valid token it last saw (backends keep sending
// messages), not a 503.
func TestAppTokenDuringARedisOutage(t *testing.T) {
	c, _ := newAppTokenCluster(t)
	statuses, tokens, _ := c.getAppTokens(4)
	if statuses[200] != 4 || len(tokens) != 1 {
		t.Fatalf("GET /app-token: statuses %v, tokens %d", statuses, len(tokens))
	}
	c.redis.Stop()
	statuses, tokens2, slowest := c.getAppTokens(10)
	if statuses[200] != 10 || len(tokens2) != 1 || tokens2[firstKey(tokens)] != 10 {
		t.Errorf("Redis down: statuses %v, tokens %v (slowest %v); want the current token from both replicas", statuses, len(tokens2), slowest)
	}
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// TestShutdownReleasesRefreshLease: a replica stops while its background
// refresh of a login waits for WeChat. Shutdown cuts the refresh and lets
// its lease go before it closes the store, so the other replica refreshes
// that login at once: the lease must not be left for its 40 s TTL (during
// which every request there with the expired token waits refresh_wait and
// pass_wechat_token routes answer 503).
func TestShutdownReleasesRefreshLease(t *testing.T) {
	t.Setenv("WXGATE_SESSION_REFRESH_WAIT", "0s")
	t.Setenv("WXGATE_WECHAT_TIMEOUT", "5s")
	sw, _, c := switchedCluster(t, "0s")
	b := c.gws[0].browser(weChatUA)
	b.login("/", "ned")
	c.both(2*time.Hour + time.Second) // expired
	sw.set(weChatHang)
	b.get("/page", nil) // starts the refresh on replica 0, which hangs
	pollUntil(t, 5*time.Second, "replica 0 refreshing", func() bool {
		calls, _, _, _ := sw.stats()
		return calls == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.gws[0].gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sw.set(weChatUp)
	b1 := b.on(c.gws[1])
	pollUntil(t, 2*time.Second, "replica 1 passes a refreshed token", func() bool {
		resp, _ := b1.get("/wxtoken/x", nil)
		return resp.StatusCode == http.StatusOK
	})
}

// TestSweeperRefreshKeepsATouch: the sweeper refreshes the token of a
// session near its idle end; while WeChat answers (or times out), the user
// comes back (the request writes the session's last-seen time). The
// refresh's save (new tokens, or the failure's backoff) must not write back
// the last-seen time it read: that put the session's idle end in the past,
// so the save deleted a session in use, and the user was sent to log in
// again.
func TestSweeperRefreshKeepsATouch(t *testing.T) {
	for _, tc := range []struct{ timeout, result string }{{"10s", "ok"}, {"2s", "error"}} {
		t.Run(tc.result, func(t *testing.T) {
			const idle = 2*time.Hour - time.Minute // the token enters the 5m margin before the idle end
			t.Setenv("WXGATE_SESSION_IDLE_TTL", idle.String())
			t.Setenv("WXGATE_WECHAT_TIMEOUT", tc.timeout)
			t.Setenv("WXGATE_WECHAT_RETRIES", "-1")
			sw, sim, simURL := newSwitchedSim(t)
			e := newEnvOpts(t, envOptions{sim: sim, simURL: simURL, refreshAhead: "1s"})
			b := e.browser(weChatUA)
			b.login("/", "ola")
			e.both(idle - 3*time.Second)
			sw.latency.Store(int64(4 * time.Second)) // the refresh ends past the idle end it read
			pollUntil(t, 3*time.Second, "the sweeper refreshing", func() bool {
				calls, _, _, _ := sw.stats()
				return calls == 1
			})
			if resp, _ := b.get("/page", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("request while the sweeper refreshes: %d", resp.StatusCode)
			}
			done := `wxgate_token_refreshes_total{kind="sns",result="` + tc.result + `"} 1`
			pollUntil(t, 10*time.Second, "the refresh saved", func() bool { return strings.Contains(e.scrape(), done) })
			if resp, _ := b.get("/page", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("request after the sweeper's refresh: %d, want 200 (the session was in use)", resp.StatusCode)
			}
		})
	}
}
