package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// cluster is three gateways of one site sharing a Redis, a simulator, a
// signing key and a clock: what three replicas behind a load balancer are.
type cluster struct {
	t      *testing.T
	redis  *redistest.Server
	gws    []*env
	offset atomic.Int64
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, redis: redistest.Start(t)}
	return c.start(n, fmt.Sprintf("addrs = [%q]\ntimeout = \"300ms\"\n", c.redis.Addr))
}

// newClusterOn is n gateways on the Redis that redisTOML (the body of
// [session.redis]) configures: a Cluster, Sentinels.
func newClusterOn(t *testing.T, n int, redisTOML string) *cluster {
	t.Helper()
	return (&cluster{t: t}).start(n, redisTOML)
}

func (c *cluster) start(n int, redisTOML string) *cluster {
	t := c.t
	t.Helper()
	t.Setenv("WXGATE_TEST_ADMIN", "admin-secret-0123456789")
	clock := func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
	first := newEnvOpts(t, envOptions{redisTOML: redisTOML, clock: clock, adminEnv: "WXGATE_TEST_ADMIN"})
	c.gws = append(c.gws, first)
	for i := 1; i < n; i++ {
		c.gws = append(c.gws, newEnvOpts(t, envOptions{
			redisTOML: redisTOML, clock: clock, adminEnv: "WXGATE_TEST_ADMIN",
			sim: first.sim, simURL: first.simURL, publicURL: first.url, keyFile: first.keyFile,
		}))
	}
	return c
}

// both moves WeChat's clock and every gateway's.
func (c *cluster) both(d time.Duration) {
	c.gws[0].sim.Advance(d)
	c.offset.Add(int64(d))
}

// admin calls the admin API of gateway i.
func (c *cluster) admin(i int, method, path string, body any, token string) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.gws[i].adminURL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

const adminSecret = "admin-secret-0123456789"

// on returns a browser that sends the cookies of b to gateway i.
func (b *browser) on(e *env) *browser { return &browser{e: e, c: b.c, ua: b.ua} }

func TestReplicasShareSessionsAndTokens(t *testing.T) { shareSessionsAndTokens(t, newCluster(t, 3)) }

func shareSessionsAndTokens(t *testing.T, c *cluster) {
	b := c.gws[0].browser(weChatUA)
	b.login("/", "alice")
	alice := c.gws[0].user("alice")
	for i, g := range c.gws {
		if got := b.on(g).upstreamView("/", nil); first(got.Headers["X-Wechat-Openid"]) != alice.OpenID {
			t.Errorf("gateway %d: openid %v, want alice's", i+1, got.Headers["X-Wechat-Openid"])
		}
	}
	// A refresh token rotated on 2 is dead on 3.
	p1 := c.gws[0].api().mpLogin("dora")
	status, p2, _ := c.gws[1].api().post("/_wxgate/token/refresh", map[string]any{"refresh_token": p1["refresh_token"]}, "")
	if status != 200 {
		t.Fatalf("refresh on 2: %d %v", status, p2)
	}
	if status, m, _ := c.gws[2].api().post("/_wxgate/token/refresh", map[string]any{"refresh_token": p1["refresh_token"]}, ""); status != 401 || m["error"] != "invalid_grant" {
		t.Errorf("rotated-out token on 3: %d %v", status, m)
	}
	c.gws[2].api().view("/api/x", p2["access_token"].(string)) // the new pair works on 3

	// A person's logins end everywhere at once.
	if status, _ := c.admin(2, "GET", "/sessions?unionid="+alice.UnionID, nil, ""); status != 401 {
		t.Errorf("admin API without the secret: %d, want 401", status)
	}
	status, m := c.admin(2, "DELETE", "/sessions?unionid="+alice.UnionID, nil, adminSecret)
	if logins, _ := m["logins"].([]any); status != 200 || len(logins) != 1 {
		t.Fatalf("DELETE /sessions: %d %v", status, m)
	}
	for i, g := range c.gws {
		if resp, _ := b.on(g).get("/", nil); resp.StatusCode != http.StatusFound {
			t.Errorf("gateway %d after revocation: %d, want a redirect to login", i+1, resp.StatusCode)
		}
	}
	mpUser, _ := c.gws[0].sim.User(mpID, "dora")
	// One login: a refresh rotates within its family.
	if status, m := c.admin(0, "DELETE", "/sessions?openid="+mpUser.OpenID, nil, adminSecret); status != 200 || len(m["logins"].([]any)) != 1 {
		t.Errorf("DELETE /sessions for dora: %d %v", status, m)
	}
	if status, m, _ := c.gws[1].api().get("/api/x", p2["access_token"].(string)); status != 401 || m["error"] != "invalid_token" {
		t.Errorf("dora's access token after revocation: %d %v", status, m)
	}
}

func TestReplicasFetchTheAppTokenOnce(t *testing.T) {
	rs := redistest.Start(t)
	fetchTheAppTokenOnce(t, newClusterOn(t, 3, fmt.Sprintf("addrs = [%q]\ntimeout = %q\n", rs.Addr, burstTimeout)))
}

// The burst of fetchTheAppTokenOnce: every caller must get the new token
// from one fetch, within the holder's Wait (2 s) and, for each store call,
// within [session.redis] timeout. Under -race on a 2-core machine 300
// requests at once kept the test process busy for 0.2 to 0.5 s (1.3 s and
// more with other jobs running), and a store call made at the start waited
// that long for the CPU: with 300 callers and the 300 ms timeout of the
// other tests, a caller now and then got 503 unavailable, and with other
// packages testing alongside, 503 wechat_unavailable after Wait. 30 callers
// on each replica still race for the lease and share a fetch; 2 s is Wait,
// the longest a caller is kept anyway.
const (
	burstCallers = 90
	burstTimeout = "2s"
)

// fetchTheAppTokenOnce: c's gateways use a store timeout of burstTimeout.
func fetchTheAppTokenOnce(t *testing.T, c *cluster) {
	calls := func() int { return c.gws[0].sim.Calls()["/cgi-bin/stable_token"] }
	if status, m := c.admin(0, "GET", "/app-token?appid="+mpID, nil, adminSecret); status != 200 || m["access_token"] == "" {
		t.Fatalf("GET /app-token: %d %v", status, m)
	}
	if calls() != 1 {
		t.Fatalf("stable_token calls = %d, want 1", calls())
	}
	// The token expires (WeChat's clock and ours): callers on three
	// replicas at once, one fetch.
	c.both(2*time.Hour + time.Minute)
	before := calls()
	var wg sync.WaitGroup
	var mu sync.Mutex
	tokens := map[string]int{}
	for i := 0; i < burstCallers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			status, m := c.admin(i%3, "GET", "/app-token?appid="+mpID, nil, adminSecret)
			mu.Lock()
			defer mu.Unlock()
			if status != 200 {
				t.Errorf("caller %d: %d %v", i, status, m)
				return
			}
			tokens[m["access_token"].(string)]++
		}(i)
	}
	wg.Wait()
	if n := calls() - before; n != 1 {
		t.Errorf("%d concurrent callers made %d stable_token calls, want 1", burstCallers, n)
	}
	if len(tokens) != 1 {
		t.Errorf("callers got %d different tokens, want 1", len(tokens))
	}
	var current string
	for k := range tokens {
		current = k
	}

	// A reported stale token: one refresh. The same report again: none.
	before = calls()
	status, m := c.admin(1, "POST", "/app-token/invalidate", map[string]string{"appid": mpID, "access_token": current}, adminSecret)
	if status != 200 || m["refreshed"] != true || m["access_token"] == current {
		t.Fatalf("first report: %d %v", status, m)
	}
	fresh := m["access_token"].(string)
	status, m = c.admin(2, "POST", "/app-token/invalidate", map[string]string{"appid": mpID, "access_token": current}, adminSecret)
	if status != 200 || m["refreshed"] != false || m["access_token"] != fresh {
		t.Errorf("second report of the old token: %d %v", status, m)
	}
	if n := calls() - before; n != 1 {
		t.Errorf("two reports of one stale token made %d stable_token calls, want 1", n)
	}
	if status, _ := c.admin(0, "GET", "/app-token?appid=wxnope", nil, adminSecret); status != 404 {
		t.Errorf("unknown appid: %d, want 404", status)
	}
}

func TestRedisOutage(t *testing.T) {
	c := newCluster(t, 1)
	g := c.gws[0]
	b := g.browser(weChatUA)
	b.login("/", "alice")
	pair := g.api().mpLogin("dora")
	bearer := pair["access_token"].(string)

	c.redis.Stop()
	resp, body := b.get("/", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "登录状态不受影响") {
		t.Errorf("page with Redis down: %d %.200s; want the 503 page", resp.StatusCode, body)
	}
	resp, body = b.get("/", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"unavailable"`) {
		t.Errorf("JSON with Redis down: %d %s", resp.StatusCode, body)
	}
	if status, m, _ := g.api().get("/api/x", bearer); status != 503 {
		t.Errorf("bearer with Redis down: %d %v, want 503", status, m)
	}
	if status, m := c.admin(0, "GET", "/readyz", nil, ""); status != 503 {
		t.Errorf("/readyz with Redis down: %d %v", status, m)
	}
	// No app token was ever read here, so none can be served.
	if status, m := c.admin(0, "GET", "/app-token?appid="+mpID, nil, adminSecret); status != 503 || m["error"] != "unavailable" {
		t.Errorf("GET /app-token with Redis down: %d %v, want 503 with JSON error unavailable", status, m)
	}
	if status, m := c.admin(0, "GET", "/sessions?openid=o-anyone", nil, adminSecret); status != 503 || m["error"] != "unavailable" {
		t.Errorf("GET /sessions with Redis down: %d %v, want 503 with JSON error unavailable", status, m)
	}
	if b.cookie("wxgate_session") == "" {
		t.Fatal("an outage cleared the session cookie")
	}

	c.redis.Restart()
	if got := b.upstreamView("/", nil); first(got.Headers["X-Wechat-Openid"]) != g.user("alice").OpenID {
		t.Errorf("after Redis came back: %v", got.Headers["X-Wechat-Openid"])
	}
	g.api().view("/api/x", bearer)
	if status, _ := c.admin(0, "GET", "/readyz", nil, ""); status != 200 {
		t.Errorf("/readyz after Redis came back: %d", status)
	}
	resp2, _ := http.Get(g.adminURL + "/metrics")
	m, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if !strings.Contains(string(m), `wxgate_store_errors_total{op="get"}`) {
		t.Error("no store-error metric after the outage")
	}
}

// metrics returns gateway i's /metrics text.
func (c *cluster) metrics(i int) string {
	c.t.Helper()
	resp, err := http.Get(c.gws[i].adminURL + "/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAppTokenBlocked: an IP-whitelist (40164), quota (45009), risky-IP
// (89503) or frozen-secret (40243) answer is
// surfaced in the answer, /readyz and metrics, and pauses fetching instead of
// retrying.
func TestAppTokenBlocked(t *testing.T) {
	for _, code := range []int{40164, 45009, 89503, 40243} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			c := newCluster(t, 2)
			sim := c.gws[0].sim
			sim.InjectFault(wechatsim.Fault{Path: "/cgi-bin/stable_token", Errcode: code, Times: 100})
			calls := func() int { return sim.Calls()["/cgi-bin/stable_token"] }
			status, m := c.admin(0, "GET", "/app-token?appid="+mpID, nil, adminSecret)
			if status != http.StatusBadGateway || m["errcode"] != float64(code) {
				t.Errorf("first fetch: %d %v, want 502 with errcode %d", status, m, code)
			}
			for i := 0; i < 20; i++ {
				status, m = c.admin(i%2, "GET", "/app-token?appid="+mpID, nil, adminSecret)
				if status != http.StatusServiceUnavailable || m["error"] != "app_token_blocked" {
					t.Fatalf("while blocked: %d %v", status, m)
				}
			}
			if n := calls(); n != 1 {
				t.Errorf("stable_token calls = %d, want 1: no retry storm", n)
			}
			status, m = c.admin(1, "GET", "/readyz", nil, "")
			if status != 200 || m["status"] != "degraded" || !strings.Contains(mustJSON(m["app_token_blocked"]), strconv.Itoa(code)) {
				t.Errorf("/readyz: %d %v", status, m)
			}
			if want := `wxgate_app_token_blocked{appid="` + mpID + `",errcode="` + strconv.Itoa(code) + `"} 1`; !strings.Contains(c.metrics(0), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		})
	}
}

func TestRefreshMetrics(t *testing.T) {
	c := newCluster(t, 1)
	b := c.gws[0].browser(weChatUA)
	b.login("/", "alice")
	c.admin(0, "GET", "/app-token?appid="+mpID, nil, adminSecret)
	c.both(2*time.Hour + time.Second)
	b.upstreamView("/", nil)
	m := c.metrics(0)
	for _, want := range []string{
		`wxgate_token_refreshes_total{kind="sns",result="ok"} 1`,
		`wxgate_token_refreshes_total{kind="app",result="ok"} 1`,
		`wxgate_app_token_expiry_timestamp_seconds{appid="` + mpID + `"}`,
		`wxgate_app_token_fetched_timestamp_seconds{appid="` + mpID + `"}`,
	} {
		// Store errors are checked in TestRedisOutage.
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
