package proxy_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
)

func TestHeaderSpoofing(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	alice := e.user("alice")

	// Every header wxgate sets, in the spellings servers treat alike.
	spoofs := map[string]string{}
	for _, base := range []string{
		"X-WeChat-OpenID", "X-WeChat-UnionID", "X-WeChat-AppID", "X-WeChat-Scope", "X-WeChat-Nickname",
		"X-WeChat-Avatar", "X-WeChat-Phone", "X-WeChat-Identity", "X-WeChat-Access-Token", "X-Forwarded-User",
	} {
		for _, v := range []string{base, strings.ToLower(base), strings.ToUpper(base), strings.ReplaceAll(base, "-", "_"), strings.ToLower(strings.ReplaceAll(base, "-", "_"))} {
			spoofs[v] = "SPOOFED"
		}
	}
	spoofs["X-Forwarded-For"] = "6.6.6.6"
	spoofs["X-Forwarded-Host"] = "evil.example"
	spoofs["X-Forwarded-Proto"] = "https"
	spoofs["X_Forwarded_For"] = "6.6.6.6"
	spoofs["Forwarded"] = "for=6.6.6.6"
	spoofs["X-Real-IP"] = "6.6.6.6"
	spoofs["X-Request-ID"] = "chosen-by-client"
	cookies := func(session string) string {
		return "theme=dark; wxgate_session=" + session + "; __Host-wxgate_session=x; __Secure-wxgate_session=z; wxgate_login=y; __Host-wxgate_login=w; lang=zh"
	}
	spoofs["Connection"] = "keep-alive, X-Keep-Me-Out"
	spoofs["X-Keep-Me-Out"] = "hop"

	check := func(t *testing.T, got echo, loggedIn bool) {
		t.Helper()
		for name, vals := range got.Headers {
			for _, v := range vals {
				if strings.Contains(v, "SPOOFED") || strings.Contains(v, "6.6.6.6") || strings.Contains(v, "evil.example") || v == "chosen-by-client" {
					t.Errorf("upstream received %s: %q", name, v)
				}
			}
			n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			if n == "forwarded" || n == "x-real-ip" || n == "x-keep-me-out" {
				t.Errorf("upstream received %s", name)
			}
		}
		cookie := first(got.Headers["Cookie"])
		if strings.Contains(cookie, "wxgate") || !strings.Contains(cookie, "theme=dark") || !strings.Contains(cookie, "lang=zh") {
			t.Errorf("upstream Cookie = %q, want other cookies only", cookie)
		}
		if first(got.Headers["X-Forwarded-For"]) != "127.0.0.1" || first(got.Headers["X-Forwarded-Proto"]) != "http" {
			t.Errorf("X-Forwarded-For/Proto = %q/%q", got.Headers["X-Forwarded-For"], got.Headers["X-Forwarded-Proto"])
		}
		if first(got.Headers["X-Forwarded-Host"]) != strings.TrimPrefix(e.url, "http://") {
			t.Errorf("X-Forwarded-Host = %q", got.Headers["X-Forwarded-Host"])
		}
		if len(first(got.Headers["X-Request-Id"])) != 32 {
			t.Errorf("X-Request-Id = %q, want one wxgate made", got.Headers["X-Request-Id"])
		}
		openid := got.Headers["X-Wechat-Openid"]
		if loggedIn && (len(openid) != 1 || openid[0] != alice.OpenID) {
			t.Errorf("X-WeChat-OpenID = %q, want exactly %q", openid, alice.OpenID)
		}
		if !loggedIn && openid != nil {
			t.Errorf("no session, yet X-WeChat-OpenID = %q", openid)
		}
	}
	t.Run("session", func(t *testing.T) {
		spoofs["Cookie"] = cookies(b.cookie("wxgate_session"))
		check(t, b.upstreamView("/", spoofs), true)
	})
	t.Run("public without session", func(t *testing.T) {
		spoofs["Cookie"] = cookies("not-a-session")
		check(t, e.browser(weChatUA).upstreamView("/public/x", spoofs), false)
	})
}

func TestBadCookiesAreNoSession(t *testing.T) {
	e := newEnv(t)
	owner := e.browser(weChatUA)
	owner.login("/", "alice")
	real := owner.cookie("wxgate_session")
	flipped := []byte(real)
	flipped[5] ^= 1
	for _, v := range []string{
		"garbage", "", string(flipped), real + "A", real[:20], strings.Repeat("A", 43),
		"%00%ff", "\"quoted\"", strings.Repeat("x", 3000), "../../etc/passwd",
	} {
		b := e.browser(weChatUA)
		resp := b.do(http.MethodGet, "/", nil, map[string]string{"Cookie": "wxgate_session=" + v})
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Errorf("cookie %.40q: status %d, want 302 to login", v, resp.StatusCode)
		}
		resp = b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader(""), map[string]string{"Cookie": "wxgate_session=" + v})
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Errorf("logout with cookie %.40q: status %d", v, resp.StatusCode)
		}
	}
	if got := owner.upstreamView("/", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("alice").OpenID {
		t.Error("bad cookies ended someone else's session")
	}
}

func TestUnauthenticatedAnswers(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		want               string
	}{
		{"page GET redirects", "GET", "/x", nil, 302, ""},
		{"page HEAD redirects", "HEAD", "/x", nil, 302, ""},
		{"page POST 401 page", "POST", "/x", nil, 401, "需要登录"},
		{"api route JSON", "GET", "/api/me", nil, 401, `"error":"login_required"`},
		{"Accept json", "GET", "/x", map[string]string{"Accept": "application/json"}, 401, `"login_url"`},
		{"deny route", "GET", "/denied/x", nil, 403, "无权访问"},
		{"bad escape", "GET", "/%zz", nil, 400, "请求无效"},
		{"climbs above root", "GET", "/a/../../etc/passwd", nil, 400, ""},
		{"unknown wxgate path", "GET", "/_wxgate/nope", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+"/", nil)
			req.URL.Opaque = tc.path // send the path exactly as written
			req.Header.Set("User-Agent", weChatUA)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := b.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s %s = %d %.200s; want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}

func TestPathIsMatchedNormalized(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	// Public by prefix, but normalizes into a login route.
	for _, p := range []string{"/public/..%2fprofile/x", "/public/%2e%2e/profile/x", "/public//../profile/x"} {
		req, _ := http.NewRequest("GET", e.url+"/", nil)
		req.URL.Opaque = p
		req.Header.Set("User-Agent", weChatUA)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "scope=userinfo") {
			t.Errorf("GET %s = %d %q; want the profile route's login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// And the upstream sees the path that was matched.
	got := b.upstreamView("/public//a/./b/../c", nil)
	if got.URI != "/public/a/c" {
		t.Errorf("upstream URI = %q, want /public/a/c", got.URI)
	}
}

// TestPathReadings checks that a path is refused if any upstream could read
// it as a denied one, and that encoded delimiters reach the upstream still
// encoded, so that it splits the path where the policy did.
func TestPathReadings(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	rawGet := func(t *testing.T, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+"/", nil)
		req.URL.Opaque = path // send the path exactly as written
		req.Header.Set("User-Agent", weChatUA)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, p := range []string{"/denied;x/y", "/DENIED/y", "/denied./y", "/public/..;/denied/y", "/denied%3Bx/y"} {
		t.Run(p, func(t *testing.T) {
			if resp, body := rawGet(t, p); resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s = %d %.200s, want 403", p, resp.StatusCode, body)
			}
		})
	}
	for _, tc := range []struct{ path, want string }{
		{"/public/a%3Bb", "/public/a%3Bb"},
		{"/public/a%2Fb", "/public/a%2Fb"},
		{"/public/a%2fb", "/public/a%2Fb"},
		{"/public/a;b", "/public/a;b"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := rawGet(t, tc.path)
			var got echo
			if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
				t.Fatalf("GET %s = %d %.200s, want 200 from the upstream", tc.path, resp.StatusCode, body)
			}
			if got.URI != tc.want {
				t.Errorf("GET %s: upstream URI = %q, want %q", tc.path, got.URI, tc.want)
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	resp, body := b.get("/down/x", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "服务暂不可用") {
		t.Errorf("upstream down: %d %.200s; want 502 page", resp.StatusCode, body)
	}
	start := time.Now()
	resp, body = b.get("/slow/x", nil)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "超时") {
		t.Errorf("slow upstream: %d %.200s; want 504 page", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("504 came after %s; the upstream timeout is 300ms", d)
	}
	resp, body = b.get("/down/x", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"error":"upstream_down"`) {
		t.Errorf("upstream down, JSON: %d %s", resp.StatusCode, body)
	}
}

// TestBodiesStream moves 100 MB each way through the gateway and checks that
// the process allocated far less than that: bodies stream, they are not
// buffered.
func TestBodiesStream(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MB")
	}
	const size = 100 << 20
	var received int64
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			received = n
			fmt.Fprint(w, n)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = io.CopyN(w, rand.Reader, size)
	}))
	t.Cleanup(big.Close)
	e := newEnvWithUpstream(t, big.URL)
	b := e.browser(weChatUA)

	measure := func(f func()) uint64 {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		f()
		runtime.ReadMemStats(&m1)
		return m1.TotalAlloc - m0.TotalAlloc
	}
	var got int64
	down := measure(func() {
		resp := b.do(http.MethodGet, "/public/big", nil, nil)
		got, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
	if got != size {
		t.Fatalf("downloaded %d bytes, want %d", got, size)
	}
	up := measure(func() {
		resp := b.do(http.MethodPost, "/public/upload", io.LimitReader(rand.Reader, size), map[string]string{"Content-Type": "application/octet-stream"})
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
	if received != size {
		t.Fatalf("upstream received %d bytes, want %d", received, size)
	}
	// Everything in this process (client, gateway, upstream) together.
	const limit = 32 << 20
	if down > limit || up > limit {
		t.Errorf("allocated %d MB for the download and %d MB for the upload; a buffered body would be 100 MB", down>>20, up>>20)
	}
	t.Logf("allocated %.1f MB downloading and %.1f MB uploading 100 MB", float64(down)/(1<<20), float64(up)/(1<<20))
}

// newEnvWithUpstream is newEnv with the public route's upstream replaced.
func newEnvWithUpstream(t *testing.T, upstreamURL string) *env {
	t.Helper()
	e := newEnv(t)
	// Point the test upstream at the given server by proxying to it.
	target := strings.TrimPrefix(upstreamURL, "http://")
	e.upstream.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer c.Close()
		r.RequestURI = ""
		r.URL.Scheme, r.URL.Host = "http", target
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	return e
}

func TestVerifyFile(t *testing.T) {
	e := newEnv(t)
	resp, body := e.browser("curl/8").get("/MP_verify_test123.txt", nil)
	if resp.StatusCode != http.StatusOK || body != "test123" {
		t.Errorf("verify file: %d %q", resp.StatusCode, body)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	b.get("/down/x", nil)
	resp, err := http.Get(e.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`wxgate_logins_total{flow="oa",result="ok"} 1`,
		`wxgate_login_identities_total{flow="oa",key="unionid"} 1`,
		`wxgate_requests_total{code="502",route="down"} 1`,
		`wxgate_requests_total{code="302",route="default"} 1`,
		`wxgate_wechat_api_calls_total{endpoint="/sns/oauth2/access_token",errcode="0"} 1`,
		`wxgate_upstream_duration_seconds_count{outcome="error",upstream="down"} 1`,
		`wxgate_request_duration_seconds_bucket`,
		`wxgate_active_sessions 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.adminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s = %d %v", path, resp.StatusCode, v)
		}
	}
	// The admin endpoints are not on the public listener.
	if resp, _ := b.get("/metrics", nil); resp.StatusCode == http.StatusOK && strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
		t.Error("/metrics answered on the public listener")
	}
}

// readCounter is a session store that counts reads.
type readCounter struct {
	session.Store
	reads atomic.Int64
}

func (s *readCounter) Get(ctx context.Context, key string) ([]byte, error) {
	s.reads.Add(1)
	return s.Store.Get(ctx, key)
}

// TestPublicAndDenyRoutesSkipTheCaller: the route is decided before the
// caller is looked at, and public and deny routes never look (issue 10).
// A valid session or bearer token costs them no store read, a public route
// forwards no identity, and a bad bearer token there is no error.
func TestPublicAndDenyRoutesSkipTheCaller(t *testing.T) {
	store := &readCounter{Store: session.NewMemory(time.Minute)}
	e := newEnvOpts(t, envOptions{store: store})
	b := e.browser(weChatUA)
	b.login("/", "alice")
	cookie := "wxgate_session=" + b.cookie("wxgate_session")
	bearer := "Bearer " + e.api().mpLogin("dora")["access_token"].(string)
	tests := []struct {
		name, host, path, auth string
		want                   int
	}{
		{"public, cookie", "", "/public/x", cookie, http.StatusOK},
		{"public, bearer", "", "/public/x", bearer, http.StatusOK},
		{"public, bad bearer", "", "/public/x", "Bearer abc", http.StatusOK},
		{"deny route, cookie", "", "/denied/x", cookie, http.StatusForbidden},
		{"deny route, bearer", "", "/denied/x", bearer, http.StatusForbidden},
		{"deny route on another reading, cookie", "", "/public/..;/denied/x", cookie, http.StatusForbidden},
		{"deny host, bearer", "internal.localhost", "/x", bearer, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := store.reads.Load()
			req, err := http.NewRequest(http.MethodGet, e.url+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			if strings.HasPrefix(tc.auth, "Bearer") {
				req.Header.Set("Authorization", tc.auth)
			} else {
				req.Header.Set("Cookie", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET %s: %d, want %d; body %.200s", tc.path, resp.StatusCode, tc.want, body)
			}
			if n := store.reads.Load() - before; n != 0 {
				t.Errorf("GET %s with %s: %d store reads, want 0", tc.path, tc.name, n)
			}
			if tc.want == http.StatusOK {
				var got echo
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatal(err)
				}
				for _, h := range []string{"X-Wechat-Openid", "X-Wechat-Identity", "X-Forwarded-User", "Authorization", "Cookie"} {
					if v := got.Headers[h]; len(v) > 0 {
						t.Errorf("the upstream of a public route received %s", h)
					}
				}
			}
		})
	}
	// The same caller on login routes is looked up: the count can move.
	for _, tc := range []struct{ path, auth string }{{"/x", cookie}, {"/api/x", bearer}} {
		before := store.reads.Load()
		hdr := map[string]string{"Cookie": tc.auth}
		if strings.HasPrefix(tc.auth, "Bearer") {
			hdr = map[string]string{"Authorization": tc.auth}
		}
		got := e.browser(weChatUA).upstreamView(tc.path, hdr)
		if first(got.Headers["X-Wechat-Openid"]) == "" {
			t.Errorf("GET %s: the upstream got no identity", tc.path)
		}
		if store.reads.Load() == before {
			t.Errorf("GET %s on a login route read nothing from the store", tc.path)
		}
	}
}

// TestPublicRouteIgnoresWeChatOutage: while WeChat refuses every token
// refresh, a public route is served to callers whose WeChat tokens have
// expired without a single refresh call, and a bad bearer token there is
// ignored; a login route tries the refresh (and is served anyway).
func TestPublicRouteIgnoresWeChatOutage(t *testing.T) {
	sw, sim, simURL := newSwitchedSim(t)
	e := newEnvOpts(t, envOptions{sim: sim, simURL: simURL})
	b := e.browser(weChatUA)
	b.login("/", "alice")
	bearer := appLogin(t, e, "gus")["access_token"].(string)
	e.both(2*time.Hour + time.Minute) // both logins' WeChat tokens expired
	sw.set(weChat503)
	if resp, body := b.get("/public/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("public route, session: %d, want 200; body %.200s", resp.StatusCode, body)
	}
	if status, body, _ := e.api().get("/public/x", bearer); status != http.StatusOK {
		t.Fatalf("public route, bearer: %d, want 200; body %v", status, body)
	}
	if calls, _, _, _ := sw.stats(); calls != 0 {
		t.Errorf("public routes made %d WeChat refresh calls, want 0", calls)
	}
	if resp, body := b.get("/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("login route, session, WeChat down: %d, want 200; body %.200s", resp.StatusCode, body)
	}
	pollUntil(t, 5*time.Second, "the login route's refresh reached WeChat", func() bool {
		calls, _, _, _ := sw.stats()
		return calls > 0
	})
}
