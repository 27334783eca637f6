package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// WeChat's availability, as weChatSwitch plays it for the user-token
// refresh.
const (
	weChatUp   int32 = iota // calls reach the simulator
	weChat503               // HTTP 503, at once
	weChatHang              // no answer until the switch is set back up
)

// weChatSwitch stands between the gateway and the simulator as WeChat's
// network would: for /sns/oauth2/refresh_token it answers 503 or hangs as
// told, adds latency, and records every call by refresh token (one per
// login) and how many were in flight at once. Every other call passes.
type weChatSwitch struct {
	sim     http.Handler
	latency atomic.Int64 // added to each refresh that reaches the simulator

	mu       sync.Mutex
	mode     int32
	released chan struct{}          // closed when a hang ends
	calls    map[string][]time.Time // refresh calls by refresh token
	ok       map[string][]time.Time // refreshes that reached the simulator
	inFlight int
	peak     int
}

func newSwitchedSim(t *testing.T) (*weChatSwitch, *wechatsim.Server, string) {
	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1"},
		wechatsim.App{AppID: appID, Secret: appSecret, Type: wechatsim.MobileApp, OpenPlatformID: "open-1"},
	)
	sw := &weChatSwitch{sim: sim, released: make(chan struct{}), calls: map[string][]time.Time{}, ok: map[string][]time.Time{}}
	srv := httptest.NewServer(sw)
	t.Cleanup(srv.Close)
	// Hanging handlers end before the server closes.
	t.Cleanup(func() { sw.set(weChatUp) })
	return sw, sim, srv.URL
}

func (sw *weChatSwitch) set(mode int32) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.mode == weChatHang && mode != weChatHang {
		close(sw.released)
		sw.released = make(chan struct{})
	}
	sw.mode = mode
}

func (sw *weChatSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != refreshPath {
		sw.sim.ServeHTTP(w, r)
		return
	}
	rt := r.URL.Query().Get("refresh_token")
	sw.mu.Lock()
	sw.calls[rt] = append(sw.calls[rt], time.Now())
	sw.inFlight++
	sw.peak = max(sw.peak, sw.inFlight)
	mode, released := sw.mode, sw.released
	sw.mu.Unlock()
	defer func() {
		sw.mu.Lock()
		sw.inFlight--
		sw.mu.Unlock()
	}()
	switch mode {
	case weChat503:
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	case weChatHang:
		select {
		case <-released:
		case <-r.Context().Done():
			return
		}
	}
	time.Sleep(time.Duration(sw.latency.Load()))
	sw.mu.Lock()
	sw.ok[rt] = append(sw.ok[rt], time.Now())
	sw.mu.Unlock()
	sw.sim.ServeHTTP(w, r)
}

// stats returns the refresh calls so far, in all and per login, the
// logins refreshed at least once, and the most calls in flight at once.
func (sw *weChatSwitch) stats() (calls int, perLogin map[string]int, refreshed, peak int) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	perLogin = map[string]int{}
	for rt, c := range sw.calls {
		calls += len(c)
		perLogin[rt] = len(c)
	}
	return calls, perLogin, len(sw.ok), sw.peak
}

// refreshTimes returns, per login, when its refreshes reached the
// simulator.
func (sw *weChatSwitch) refreshTimes() map[string][]time.Time {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	out := map[string][]time.Time{}
	for rt, ts := range sw.ok {
		out[rt] = append([]time.Time(nil), ts...)
	}
	return out
}

// attemptsWithin bounds the refresh attempts of one login in window with
// [session] refresh_backoff base: the first at once, then each after the
// shortest pause the jitter allows (0.8 x base x 2^n).
func attemptsWithin(window, base time.Duration) int {
	n, at := 1, time.Duration(0)
	for pause := base * 8 / 10; ; pause *= 2 {
		if at += min(pause, 12*base*8/10); at > window {
			return n
		}
		n++
	}
}

// callsPerAttempt is how many calls one refresh makes while WeChat answers
// 503: the first and [wechat] retries (2).
const callsPerAttempt = 3

// loginMany logs n browsers in on e, as users prefix000, prefix001...
func loginMany(t *testing.T, e *env, n int, prefix string) []*browser {
	t.Helper()
	bs := make([]*browser, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				b := e.browser(weChatUA)
				b.login("/", fmt.Sprintf("%s%03d", prefix, i))
				bs[i] = b
			}
		}()
	}
	wg.Wait()
	return bs
}

// appLogin logs user in through the mobile app and returns its token pair.
func appLogin(t *testing.T, e *env, user string) map[string]any {
	t.Helper()
	code := e.simPost("/_sim/code", map[string]string{"appid": appID, "user": user})["code"]
	status, pair, _ := e.api().post("/_wxgate/app/login", map[string]any{"code": code}, "")
	if status != http.StatusOK {
		t.Fatalf("app login: %d %v", status, pair)
	}
	return pair
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// TestRefreshInMarginDuringHang: a login whose WeChat token is within the
// refresh margin, still valid, while WeChat hangs. Every request is
// answered at once with the current token (it used to wait 3 attempts x
// [wechat] timeout, 15 s); the refresh runs once, in the background, and
// lands when WeChat answers again.
func TestRefreshInMarginDuringHang(t *testing.T) {
	t.Setenv("WXGATE_WECHAT_TIMEOUT", "5s") // the production default
	sw, sim, simURL := newSwitchedSim(t)
	e := newEnvOpts(t, envOptions{sim: sim, simURL: simURL})
	b := e.browser(weChatUA)
	b.c.Timeout = time.Minute
	b.login("/", "alice")
	bearer := appLogin(t, e, "gus")["access_token"].(string)
	e.both(2*time.Hour - 2*time.Minute) // inside the 5m margin
	sw.set(weChatHang)

	const hang = 15 * time.Second // what one refresh takes against a hang
	var worst time.Duration
	defer func() { t.Logf("slowest browser request during the hang: %s", worst.Round(time.Millisecond)) }()
	for i := 0; i < 5; i++ {
		var resp *http.Response
		d := timed(func() { resp, _ = b.get("/page", nil) })
		worst = max(worst, d)
		if resp.StatusCode != http.StatusOK || d > hang/15 {
			t.Fatalf("browser request %d during the hang: %d after %s, want 200 well under the %s hang", i, resp.StatusCode, d.Round(time.Millisecond), hang)
		}
		var got echo
		if d := timed(func() { got = b.upstreamView("/wxtoken/x", nil) }); first(got.Headers["X-Wechat-Access-Token"]) == "" || d > hang/15 {
			t.Fatalf("pass_wechat_token request %d during the hang: token %q after %s", i, first(got.Headers["X-Wechat-Access-Token"]), d)
		}
		var status int
		if d := timed(func() { status, _, _ = e.api().get("/api/x", bearer) }); status != http.StatusOK || d > hang/15 {
			t.Fatalf("bearer request %d during the hang: %d after %s", i, status, d)
		}
	}
	// One refresh per login is in flight, not one per request.
	_, per, _, _ := sw.stats()
	if len(per) != 2 {
		t.Errorf("refresh calls during the hang by login = %v, want calls for 2 logins", per)
	}
	for rt, n := range per {
		if n > callsPerAttempt {
			t.Errorf("login %.8s: %d refresh calls during the hang, want one refresh (at most %d)", rt, n, callsPerAttempt)
		}
	}
	sw.set(weChatUp)
	pollUntil(t, 10*time.Second, "both logins refreshed once WeChat answers", func() bool {
		_, _, refreshed, _ := sw.stats()
		return refreshed == 2
	})
}

// TestRefreshOutageBoundedCalls: 200 sessions inside the margin, 10
// requests each, while WeChat answers 503. Every request is served, and
// the refresh calls stay within one attempt per session per backoff step
// (they used to be one attempt per request). Once WeChat is back, every
// session's token is refreshed.
func TestRefreshOutageBoundedCalls(t *testing.T) {
	const backoff = time.Second
	t.Setenv("WXGATE_SESSION_REFRESH_BACKOFF", backoff.String())
	sw, sim, simURL := newSwitchedSim(t)
	e := newEnvOpts(t, envOptions{sim: sim, simURL: simURL})
	const sessions, rounds = 200, 10
	bs := loginMany(t, e, sessions, "crowd")
	e.both(2*time.Hour - 2*time.Minute)
	sw.set(weChat503)

	start := time.Now()
	var served, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				for i := w; i < sessions; i += 50 {
					resp, _ := bs[i].get("/page", nil)
					if resp.StatusCode == http.StatusOK {
						served.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	window := time.Since(start)
	calls, per, _, _ := sw.stats()
	bound := sessions * callsPerAttempt * attemptsWithin(window, backoff)
	t.Logf("%d requests in %s during the outage: %d refresh calls (bound %d) for %d sessions", served.Load()+failed.Load(), window.Round(time.Millisecond), calls, bound, len(per))
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the outage, want all served", failed.Load(), sessions*rounds)
	}
	if calls > bound {
		t.Errorf("%d sessions x %d requests made %d refresh calls in %s, want at most %d (one attempt per session per backoff step)",
			sessions, rounds, calls, window.Round(time.Millisecond), bound)
	}

	sw.set(weChatUp)
	pollUntil(t, 20*time.Second, "every session refreshed once WeChat is back", func() bool {
		for _, b := range bs {
			b.get("/page", nil)
		}
		_, _, refreshed, _ := sw.stats()
		return refreshed == sessions
	})
}

// TestExpiredTokenWaitsAtMostRefreshWait: a token past its expiry while
// WeChat hangs. A request waits at most [session] refresh_wait (it used to
// wait for the whole refresh, 15 s); a route that only needs the identity is
// then served, a pass_wechat_token route gets 503 with Retry-After. Once
// WeChat answers, the token is refreshed and passed again.
func TestExpiredTokenWaitsAtMostRefreshWait(t *testing.T) {
	for _, wait := range []time.Duration{0, time.Second} {
		t.Run("refresh_wait="+wait.String(), func(t *testing.T) {
			t.Setenv("WXGATE_WECHAT_TIMEOUT", "5s")
			t.Setenv("WXGATE_SESSION_REFRESH_WAIT", wait.String())
			sw, sim, simURL := newSwitchedSim(t)
			e := newEnvOpts(t, envOptions{sim: sim, simURL: simURL})
			b := e.browser(weChatUA)
			b.c.Timeout = time.Minute
			b.login("/", "erin")
			pair := appLogin(t, e, "gus")
			e.both(2*time.Hour + time.Second) // expired
			sw.set(weChatHang)

			limit := wait + time.Second // the wait, and room for a loaded machine
			var resp *http.Response
			if d := timed(func() { resp, _ = b.get("/page", nil) }); resp.StatusCode != http.StatusOK || d > limit {
				t.Errorf("identity-only route with an expired token: %d after %s, want 200 within %s", resp.StatusCode, d.Round(time.Millisecond), limit)
			}
			var body string
			if d := timed(func() { resp, body = b.get("/wxtoken/x", nil) }); resp.StatusCode != http.StatusServiceUnavailable || d > limit {
				t.Errorf("pass_wechat_token route with an expired token: %d after %s, want 503 within %s", resp.StatusCode, d.Round(time.Millisecond), limit)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("503 Retry-After = %q, want a number of seconds", resp.Header.Get("Retry-After"))
			}
			if want := `"error":"wechat_unavailable"`; !strings.Contains(body, want) {
				t.Errorf("503 body %.200s, want %s", body, want)
			}
			// An app login's tokens follow the same rules. Its wxgate access
			// token expired too: the client rotates its pair first.
			a := e.api()
			status, next, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": pair["refresh_token"]}, "")
			if status != http.StatusOK {
				t.Fatalf("rotating the app pair: %d %v", status, next)
			}
			bearer := next["access_token"].(string)
			var m map[string]any
			var h http.Header
			if d := timed(func() { status, m, h = a.get("/wxtoken/x", bearer) }); status != http.StatusServiceUnavailable || m["error"] != "wechat_unavailable" || h.Get("Retry-After") == "" || d > limit {
				t.Errorf("bearer on a pass_wechat_token route with an expired WeChat token: %d %v Retry-After %q after %s, want 503 within %s",
					status, m, h.Get("Retry-After"), d.Round(time.Millisecond), limit)
			}
			if d := timed(func() { status, m, _ = a.get("/api/x", bearer) }); status != http.StatusOK || d > limit {
				t.Errorf("bearer on an identity-only route with an expired WeChat token: %d %v after %s, want 200 within %s", status, m, d.Round(time.Millisecond), limit)
			}

			sw.set(weChatUp)
			pollUntil(t, 10*time.Second, "the tokens passed again once WeChat answers", func() bool {
				resp, _ := b.get("/wxtoken/x", nil)
				status, _, _ := a.get("/wxtoken/x", bearer)
				return resp.StatusCode == http.StatusOK && status == http.StatusOK
			})
			if b.cookie("wxgate_session") == "" {
				t.Error("the outage ended the session")
			}
		})
	}
}

// TestSnsRefreshOutageKeepsSession: each kind of WeChat failure during the
// refresh of an expired token leaves the session working; the next attempt
// after the backoff refreshes.
func TestSnsRefreshOutageKeepsSession(t *testing.T) {
	t.Setenv("WXGATE_SESSION_REFRESH_BACKOFF", "100ms")
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "bob")
	e.both(2*time.Hour + time.Second)
	for _, f := range []wechatsim.Fault{
		{Path: refreshPath, Errcode: -1, Times: 3},
		{Path: refreshPath, HTTPStatus: 502, Times: 3},
		{Path: refreshPath, DelayMS: 700, Times: 3}, // past the 500ms WeChat timeout
	} {
		before := e.refreshes()
		e.sim.InjectFault(f)
		// Requests until the refresh has used the fault up, each served.
		pollUntil(t, 10*time.Second, fmt.Sprintf("fault %+v used up", f), func() bool {
			if resp, _ := b.get("/page", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("fault %+v: status %d, want 200 with the session kept", f, resp.StatusCode)
			}
			return e.refreshes() >= before+3
		})
	}
	// WeChat back: a request after the backoff refreshes.
	before := e.refreshes()
	pollUntil(t, 10*time.Second, "a refresh once WeChat was back", func() bool {
		b.upstreamView("/page", nil)
		return e.refreshes() > before
	})
}

// switchedCluster is two replicas on one Redis, with one clock, behind a
// weChatSwitch; refreshAhead is their [session] refresh_ahead.
func switchedCluster(t *testing.T, refreshAhead string) (*weChatSwitch, *wechatsim.Server, *cluster) {
	t.Helper()
	sw, sim, simURL := newSwitchedSim(t)
	c := &cluster{t: t, redis: redistest.Start(t)}
	clock := func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
	for i := 0; i < 2; i++ {
		o := envOptions{redisAddr: c.redis.Addr, refreshAhead: refreshAhead, sim: sim, simURL: simURL, clock: clock}
		if i > 0 {
			o.publicURL, o.keyFile = c.gws[0].url, c.gws[0].keyFile
		}
		c.gws = append(c.gws, newEnvOpts(t, o))
	}
	return sw, sim, c
}

// sweepCluster is a switchedCluster sweeping every second, whose
// simulator issues sns tokens living life.
func sweepCluster(t *testing.T, life time.Duration) (*weChatSwitch, *cluster) {
	t.Helper()
	sw, sim, c := switchedCluster(t, "1s")
	sim.SetLifetimes(wechatsim.Lifetimes{SNSAccessToken: life})
	return sw, c
}

// TestReplicaWaitsForAnotherReplicasRefresh: an expired token, and WeChat
// slow to refresh it. A request on replica 1 starts the refresh; one on
// replica 2 meanwhile finds the lease held and waits, within refresh_wait,
// for the tokens replica 1 saves, instead of refreshing a second time or
// failing: one refresh call, both requests get the new token.
func TestReplicaWaitsForAnotherReplicasRefresh(t *testing.T) {
	t.Setenv("WXGATE_WECHAT_TIMEOUT", "5s")
	sw, _, c := switchedCluster(t, "0s")
	b := c.gws[0].browser(weChatUA)
	b.login("/", "fay")
	c.both(2*time.Hour + time.Second)
	sw.latency.Store(int64(time.Second))

	got := make(chan echo, 1)
	go func() {
		resp, body := b.get("/wxtoken/x", nil)
		var e echo
		if resp.StatusCode == http.StatusOK {
			_ = json.Unmarshal([]byte(body), &e)
		}
		got <- e
	}()
	pollUntil(t, 5*time.Second, "replica 1 refreshing", func() bool {
		calls, _, _, _ := sw.stats()
		return calls == 1
	})
	second := b.on(c.gws[1]).upstreamView("/wxtoken/x", nil)
	first1 := <-got
	if a, b := first(first1.Headers["X-Wechat-Access-Token"]), first(second.Headers["X-Wechat-Access-Token"]); a == "" || a != b {
		t.Errorf("access tokens passed by the replicas: %q and %q, want the one new token", a, b)
	}
	if calls, _, _, _ := sw.stats(); calls != 1 {
		t.Errorf("refresh calls = %d, want 1 across both replicas", calls)
	}
}

// TestSweeperRefreshesOncePerLifetime: sessions nobody uses, with 6 s
// tokens, a 4 s margin and two replicas sweeping every second while WeChat
// takes 300ms a refresh. Every token is refreshed before it expires, and
// only once per lifetime (no second refresh of a token already renewed,
// from either replica); the sweepers never have more than sweepWorkers
// refreshes each at WeChat.
func TestSweeperRefreshesOncePerLifetime(t *testing.T) {
	const life, margin = 6 * time.Second, 4 * time.Second
	t.Setenv("WXGATE_SESSION_REFRESH_MARGIN", margin.String())
	sw, c := sweepCluster(t, life)
	sw.latency.Store(int64(300 * time.Millisecond))
	const sessions = 30
	loginMany(t, c.gws[0], sessions, "idle")
	loggedIn := time.Now()
	time.Sleep(2*life - margin) // two rounds of refreshes; real time is what is tested
	end := time.Now()

	times := sw.refreshTimes()
	if len(times) != sessions {
		t.Errorf("%d of %d sessions refreshed", len(times), sessions)
	}
	for rt, ts := range times {
		prev := loggedIn
		for i, at := range append(ts, end) {
			gap := at.Sub(prev)
			if gap >= life {
				t.Errorf("login %.8s: %s without a refresh (refreshes at %v): its token expired", rt, gap.Round(time.Millisecond), offsets(loggedIn, ts))
			}
			if i > 0 && i < len(ts) && gap < life-margin-200*time.Millisecond {
				t.Errorf("login %.8s refreshed again %s after its last refresh (refreshes at %v): twice in one lifetime", rt, gap.Round(time.Millisecond), offsets(loggedIn, ts))
			}
			prev = at
		}
	}
	if _, _, _, peak := sw.stats(); peak > 2*4 {
		t.Errorf("%d refreshes at WeChat at once, want at most 4 per replica", peak)
	}
}

func offsets(from time.Time, ts []time.Time) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Sub(from).Round(10*time.Millisecond).String())
	}
	return out
}

// TestSweeperOutageBacksOff: two replicas sweep while WeChat answers 503.
// Each session is tried at most once per backoff step, across both
// replicas (they used to retry every session at every sweep); no session
// ends; once WeChat is back, every token is refreshed.
func TestSweeperOutageBacksOff(t *testing.T) {
	const life, margin, backoff = 6 * time.Second, 5 * time.Second, 2 * time.Second
	t.Setenv("WXGATE_SESSION_REFRESH_MARGIN", margin.String())
	t.Setenv("WXGATE_SESSION_REFRESH_BACKOFF", backoff.String())
	sw, c := sweepCluster(t, life)
	sw.set(weChat503)
	const sessions = 4
	bs := loginMany(t, c.gws[0], sessions, "swept")
	start := time.Now()
	time.Sleep(4 * time.Second)
	window := time.Since(start)

	_, per, _, _ := sw.stats()
	bound := callsPerAttempt * attemptsWithin(window, backoff)
	var counts []int
	for _, n := range per {
		counts = append(counts, n)
	}
	t.Logf("refresh calls per session in %s of 503s: %v (bound %d)", window.Round(time.Millisecond), counts, bound)
	if len(per) != sessions {
		t.Errorf("the sweepers tried %d of %d sessions", len(per), sessions)
	}
	for rt, n := range per {
		if n > bound {
			t.Errorf("login %.8s: %d refresh calls in %s, want at most %d (one attempt per backoff step)", rt, n, window.Round(time.Millisecond), bound)
		}
	}
	for i, b := range bs {
		for j, g := range c.gws {
			if got := b.on(g).upstreamView("/page", nil); first(got.Headers["X-Wechat-Openid"]) == "" {
				t.Errorf("session %d on replica %d after the outage: no identity", i, j)
			}
		}
	}
	sw.set(weChatUp)
	pollUntil(t, 15*time.Second, "every session refreshed by the sweepers once WeChat is back", func() bool {
		_, _, refreshed, _ := sw.stats()
		return refreshed == sessions
	})
}

// TestRefreshConfig: [session] refresh_wait defaults to 3s and "0s" (in the
// file or the environment) means never wait, unlike the other durations
// whose zero takes the default; out-of-range values name their key.
func TestRefreshConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		session string
		env     []string
		want    time.Duration
		bad     string
	}{
		{name: "default", want: 3 * time.Second},
		{name: "never in the file", session: `refresh_wait = "0s"`, want: 0},
		{name: "never from the environment", env: []string{"WXGATE_SESSION_REFRESH_WAIT=0s"}, want: 0},
		{name: "set", session: `refresh_wait = "1500ms"`, want: 1500 * time.Millisecond},
		{name: "negative", session: `refresh_wait = "-1s"`, bad: "session.refresh_wait"},
		{name: "too long", session: `refresh_wait = "2m"`, bad: "session.refresh_wait"},
		{name: "backoff too short", session: `refresh_backoff = "10ms"`, want: 3 * time.Second, bad: "session.refresh_backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "gateway.toml")
			if err := os.WriteFile(path, []byte("[session]\n"+tc.session+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := proxy.LoadConfig(path, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Session.Validate()
			switch {
			case tc.bad != "":
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Errorf("Validate() = %v, want an error naming %s", err, tc.bad)
				}
			case err != nil:
				t.Errorf("Validate() = %v", err)
			case cfg.Session.Wait() != tc.want:
				t.Errorf("refresh_wait = %s, want %s", cfg.Session.Wait(), tc.want)
			}
		})
	}
}
