package proxy_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// authEnv is a gateway that trusts 127.0.0.1 as its proxy; browsers from
// 127.0.0.2 are untrusted peers.
func authEnv(t *testing.T) *env {
	return newEnvOpts(t, envOptions{serverKeys: `trusted_proxies = ["127.0.0.1/32"]`})
}

// ask sends a forward-auth question from the client b with the headers
// hdr, and returns the answer (body read and closed).
func (b *browser) ask(query string, hdr map[string]string) *http.Response {
	b.e.t.Helper()
	resp, _ := b.get("/_wxgate/auth"+query, hdr)
	return resp
}

// sessionCookie is the Cookie header a proxy copies from b's requests.
func (b *browser) sessionCookie() string { return "wxgate_session=" + b.cookie("wxgate_session") }

// identityHeaders are the headers wxgate sets for a caller.
var identityHeaders = []string{
	"X-Wechat-Openid", "X-Wechat-Unionid", "X-Wechat-Appid", "X-Wechat-Scope", "X-Wechat-Nickname",
	"X-Wechat-Avatar", "X-Wechat-Phone", "X-Wechat-Access-Token", "X-Wechat-Identity", "X-Forwarded-User",
}

// TestForwardAuthOutcomes: each decision a proxy can get, for an
// anonymous and a logged-in browser, by both ways of naming the request.
func TestForwardAuthOutcomes(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	cookie := alice.sessionCookie()

	tests := []struct {
		name       string
		hdr        map[string]string
		query      string
		wantStatus int
		// wantLocation is the start URL's rd and scope; empty: no Location.
		wantRD, wantScope string
		wantIdentity      bool
	}{
		{name: "public", hdr: map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": host}, wantStatus: 200},
		{name: "public with a session", hdr: map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": host, "Cookie": cookie}, wantStatus: 200},
		{name: "login needed", hdr: map[string]string{"X-Forwarded-Uri": "/orders?id=7", "X-Forwarded-Host": host}, wantStatus: 401, wantRD: e.url + "/orders?id=7", wantScope: "base"},
		{name: "login needed, X-Original-URL", hdr: map[string]string{"X-Original-URL": e.url + "/orders?id=7"}, wantStatus: 401, wantRD: e.url + "/orders?id=7", wantScope: "base"},
		{name: "login needed, mode=redirect", query: "?mode=redirect", hdr: map[string]string{"X-Forwarded-Uri": "/orders", "X-Forwarded-Host": host}, wantStatus: 302, wantRD: e.url + "/orders", wantScope: "base"},
		{name: "login needed, allowed redirect host", hdr: map[string]string{"X-Original-URL": "https://app.trusted.example/x"}, wantStatus: 401, wantRD: "https://app.trusted.example/x", wantScope: "base"},
		{name: "login needed, host /start would refuse", hdr: map[string]string{"X-Original-URL": "https://evil.example/x?y=1"}, wantStatus: 401, wantRD: "/x?y=1", wantScope: "base"},
		{name: "logged in", hdr: map[string]string{"X-Forwarded-Uri": "/orders", "X-Forwarded-Host": host, "Cookie": cookie}, wantStatus: 200, wantIdentity: true},
		{name: "logged in, X-Original-URL", hdr: map[string]string{"X-Original-URL": e.url + "/orders", "Cookie": cookie}, wantStatus: 200, wantIdentity: true},
		{name: "scope too small", hdr: map[string]string{"X-Forwarded-Uri": "/profile/me", "X-Forwarded-Host": host, "Cookie": cookie}, wantStatus: 401, wantRD: e.url + "/profile/me", wantScope: "userinfo"},
		{name: "deny route", hdr: map[string]string{"X-Forwarded-Uri": "/denied/x", "X-Forwarded-Host": host, "Cookie": cookie}, wantStatus: 403},
		{name: "deny host", hdr: map[string]string{"X-Forwarded-Uri": "/", "X-Forwarded-Host": "internal.localhost"}, wantStatus: 403},
		{name: "deny by method", hdr: map[string]string{"X-Forwarded-Uri": "/denied/x", "X-Forwarded-Method": "POST", "X-Forwarded-Host": host}, wantStatus: 403},
		{name: "not on the allow list", hdr: map[string]string{"X-Forwarded-Uri": "/vip/x", "X-Forwarded-Host": host, "Cookie": cookie}, wantStatus: 403},
		{name: "allow list, anonymous", hdr: map[string]string{"X-Forwarded-Uri": "/vip/x", "X-Forwarded-Host": host}, wantStatus: 401, wantRD: e.url + "/vip/x", wantScope: "base"},
		{name: "bad bearer token", hdr: map[string]string{"X-Forwarded-Uri": "/api/x", "X-Forwarded-Host": host, "Authorization": "Bearer nonsense"}, wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.browser("nginx").ask(tt.query, tt.hdr)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			loc := resp.Header.Get("Location")
			if tt.wantRD == "" {
				if loc != "" {
					t.Errorf("Location %q, want none", loc)
				}
			} else {
				u, err := url.Parse(loc)
				if err != nil || u.Scheme+"://"+u.Host != e.url || u.Path != "/_wxgate/start" {
					t.Fatalf("Location %q, want the absolute start URL", loc)
				}
				if rd, scope := u.Query().Get("rd"), u.Query().Get("scope"); rd != tt.wantRD || scope != tt.wantScope {
					t.Errorf("Location rd %q scope %q, want %q %q", rd, scope, tt.wantRD, tt.wantScope)
				}
			}
			for _, h := range identityHeaders {
				if v := resp.Header.Get(h); tt.wantIdentity != (v != "") && h != "X-Wechat-Phone" && h != "X-Wechat-Access-Token" && h != "X-Wechat-Nickname" && h != "X-Wechat-Avatar" {
					t.Errorf("%s = %q, want it set: %v", h, v, tt.wantIdentity)
				}
			}
		})
	}
}

// TestForwardAuthLoginLink: the Location a proxy gets starts a login that
// ends back at the original URL, logged in.
func TestForwardAuthLoginLink(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	resp := e.browser("nginx").ask("", map[string]string{"X-Forwarded-Uri": "/orders?id=7", "X-Forwarded-Host": host})
	b := e.browser(weChatUA)
	auth := b.expectRedirect(resp.Header.Get("Location"))
	back := b.expectRedirect(b.authorize(auth, "alice", "allow"))
	if back != e.url+"/orders?id=7" {
		t.Errorf("login returns to %q, want %q", back, e.url+"/orders?id=7")
	}
	if got := e.browser("nginx").ask("", map[string]string{"X-Forwarded-Uri": "/orders", "X-Forwarded-Host": host, "Cookie": b.sessionCookie()}); got.StatusCode != 200 {
		t.Errorf("after login: status %d, want 200", got.StatusCode)
	}
}

// TestForwardAuthIdentity: the identity a proxy gets is the caller's, with
// an assertion for the route's upstream; headers the client forged in the
// request never come back.
func TestForwardAuthIdentity(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	b := e.browser(weChatUA)
	b.login("/", "alice")
	alice := e.user("alice")
	hdr := map[string]string{"X-Forwarded-Uri": "/orders", "X-Forwarded-Host": host, "Cookie": b.sessionCookie()}
	forged := map[string]string{
		"X-WeChat-OpenID": "forged-openid", "X-WeChat-UnionID": "forged-unionid", "X-Forwarded-User": "forged-user",
		"X-WeChat-Identity": "forged", "X-WeChat-Phone": "13800000000", "X_WeChat_Nickname": "forged",
		"X-WeChat-Access-Token": "forged-token",
	}
	for k, v := range forged {
		hdr[k] = v
	}
	resp := e.browser("nginx").ask("", hdr)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	want := map[string]string{
		"X-Wechat-Openid": alice.OpenID, "X-Wechat-Unionid": alice.UnionID, "X-Wechat-Appid": oaID,
		"X-Wechat-Scope": "snsapi_base", "X-Forwarded-User": alice.UnionID,
		"X-Wechat-Phone": "", "X-Wechat-Access-Token": "",
	}
	for h, v := range want {
		if got := resp.Header.Get(h); got != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	for _, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, "forged") || v == "13800000000" {
				t.Errorf("a forged header came back: %q", v)
			}
		}
	}
	keys, err := jwk.Fetch(t.Context(), e.url+"/_wxgate/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseString(resp.Header.Get("X-Wechat-Identity"), jwt.WithKeySet(keys), jwt.WithIssuer(e.url), jwt.WithAudience("app"))
	if err != nil {
		t.Fatalf("verifying the assertion: %v", err)
	}
	if openid, _ := tok.Get("openid"); tok.Subject() != alice.UnionID || openid != alice.OpenID {
		t.Errorf("assertion sub %q openid %v, want %q %q", tok.Subject(), openid, alice.UnionID, alice.OpenID)
	}
}

// TestForwardAuthUntrusted: a peer outside trusted_proxies is refused
// whatever it says, even naming a public route, and with a valid session.
func TestForwardAuthUntrusted(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	b := e.browser(weChatUA)
	b.login("/", "alice")
	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"public", map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": host}},
		{"logged in", map[string]string{"X-Forwarded-Uri": "/orders", "X-Forwarded-Host": host, "Cookie": b.sessionCookie()}},
		{"X-Original-URL", map[string]string{"X-Original-URL": e.url + "/orders", "Cookie": b.sessionCookie()}},
		{"nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.browserFrom("nginx", "127.0.0.2").ask("", tt.hdr)
			if resp.StatusCode != 403 {
				t.Errorf("status %d, want 403", resp.StatusCode)
			}
			for _, h := range append(identityHeaders, "Location") {
				if v := resp.Header.Get(h); v != "" {
					t.Errorf("%s = %q on a refusal", h, v)
				}
			}
		})
	}
}

// TestForwardAuthPaths: every reading of a path decides the question as
// it decides the request proxied through wxgate itself.
func TestForwardAuthPaths(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	b := e.browser(weChatUA)
	b.login("/", "alice")
	anon := e.browser(weChatUA)
	// What a forwarded request's status means as a forward-auth answer.
	asAuth := map[int]int{200: 200, 302: 401, 401: 401, 403: 403}
	// anon is the answer for an anonymous caller, so that the table cannot
	// pass by both ways deciding alike wrongly.
	// A path with dot segments is refused as a question (403) whatever
	// the proxied answer: the proxy passes it to the app as sent
	// (TestForwardAuthDotSegments).
	paths := []struct {
		path string
		anon int
	}{
		{"/public/a", 200},
		{"/denied/x", 403},
		{"/public/..%2Fdenied/x", 403},
		{"/public/%2e%2e/denied/x", 403},
		{"/public/../denied/x", 403},
		{"/denied%2Fx", 403},
		{"/public%2F..%2Fdenied", 403},
		{"/DENIED/x", 403},
		{"/denied;x=1/y", 403},
		{"/public/./a", 200},
		{"/orders", 401},
		{"/vip/../public/a", 200},
		{"/public/..%2Forders", 401},
	}
	for _, tt := range paths {
		path := tt.path
		for _, who := range []struct {
			name string
			b    *browser
		}{{"anonymous", anon}, {"alice", b}} {
			t.Run(who.name+path, func(t *testing.T) {
				fwd, _ := who.b.get(path, nil)
				want, ok := asAuth[fwd.StatusCode]
				if !ok {
					t.Fatalf("GET %s: status %d", path, fwd.StatusCode)
				}
				if who.b == anon && want != tt.anon {
					t.Fatalf("GET %s proxied: status %d, want the answer of %d", path, fwd.StatusCode, tt.anon)
				}
				hdr := map[string]string{"X-Forwarded-Uri": path, "X-Forwarded-Host": host}
				if c := who.b.cookie("wxgate_session"); c != "" {
					hdr["Cookie"] = "wxgate_session=" + c
				}
				if slices.Contains([]string{"/public/%2e%2e/denied/x", "/public/../denied/x", "/public/./a", "/vip/../public/a"}, path) {
					want = http.StatusForbidden
				}
				if got := e.browser("nginx").ask("", hdr).StatusCode; got != want {
					t.Errorf("auth for %s = %d, want %d (proxied: %d)", path, got, want, fwd.StatusCode)
				}
			})
		}
	}
}

// TestForwardAuthMalformed: a question that does not name one request is
// answered 400, never decided.
func TestForwardAuthMalformed(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"no URI", map[string]string{"X-Forwarded-Host": host}},
		{"URI not a path", map[string]string{"X-Forwarded-Uri": "public/a", "X-Forwarded-Host": host}},
		{"absolute URI", map[string]string{"X-Forwarded-Uri": "http://evil/public/a", "X-Forwarded-Host": host}},
		{"bad escape", map[string]string{"X-Forwarded-Uri": "/public/%zz", "X-Forwarded-Host": host}},
		{"encoded NUL", map[string]string{"X-Forwarded-Uri": "/public/%00", "X-Forwarded-Host": host}},
		{"fragment", map[string]string{"X-Forwarded-Uri": "/public/a#x", "X-Forwarded-Host": host}},
		{"bad host", map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": "a b"}},
		{"host with userinfo", map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": "user@" + host}},
		{"bad method", map[string]string{"X-Forwarded-Uri": "/public/a", "X-Forwarded-Host": host, "X-Forwarded-Method": "GE(T"}},
		{"X-Original-URL relative", map[string]string{"X-Original-URL": "/public/a"}},
		{"X-Original-URL other scheme", map[string]string{"X-Original-URL": "ftp://" + host + "/public/a"}},
		{"X-Original-URL bad host", map[string]string{"X-Original-URL": "http://a_b!/public/a"}},
		{"X-Original-URL userinfo", map[string]string{"X-Original-URL": "http://u@" + host + "/public/a"}},
		{"X-Original-URL bad escape", map[string]string{"X-Original-URL": e.url + "/public/%zz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.browser("nginx").ask("", tt.hdr)
			if resp.StatusCode != 400 {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
		})
	}
}

// TestForwardAuthPathForm: Envoy's ext_authz HTTP service asks with the
// original method and {prefix}/auth + the original URI, and passes the
// answer to the client as it is.
func TestForwardAuthPathForm(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	cookie := alice.sessionCookie()
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		from               string
		wantStatus         int
		wantRD             string // the login's return URL; empty: no Location
		wantIdentity       bool
	}{
		{name: "login needed", method: "GET", path: "/orders?id=7", wantStatus: 302, wantRD: e.url + "/orders?id=7"},
		{name: "root", method: "GET", path: "/", wantStatus: 302, wantRD: e.url + "/"},
		{name: "logged in", method: "GET", path: "/orders", hdr: map[string]string{"Cookie": cookie}, wantStatus: 200, wantIdentity: true},
		{name: "logged in POST", method: "POST", path: "/orders", hdr: map[string]string{"Cookie": cookie, "Content-Length": "0"}, wantStatus: 200, wantIdentity: true},
		{name: "public", method: "GET", path: "/public/a", wantStatus: 200},
		{name: "deny by method", method: "POST", path: "/denied/x", wantStatus: 403},
		{name: "api route: 401, not a redirect", method: "GET", path: "/api/x", wantStatus: 401, wantRD: e.url + "/api/x"},
		// The original request is the path: headers naming another one
		// (the client's, passed through, or a header-form proxy's) are
		// refused, never read.
		{name: "X-Forwarded-Uri refused", method: "GET", path: "/denied/x", hdr: map[string]string{"X-Forwarded-Uri": "/public/a", "X-Original-URL": e.url + "/public/a"}, wantStatus: 400},
		{name: "another spelling of the prefix", method: "GET", path: "/../_wxgate/AUTH/public/a", wantStatus: 400},
		{name: "untrusted peer", method: "GET", path: "/public/a", from: "127.0.0.2", wantStatus: 403},
		{name: "untrusted peer with a session", method: "GET", path: "/orders", hdr: map[string]string{"Cookie": cookie}, from: "127.0.0.2", wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := e.browser("envoy")
			if tt.from != "" {
				b = e.browserFrom("envoy", tt.from)
			}
			hdr := map[string]string{"Host": host}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			target := e.url + "/_wxgate/auth" + tt.path
			if strings.HasPrefix(tt.path, "/../") {
				target = e.url + strings.TrimPrefix(tt.path, "/..")
			}
			resp := b.do(tt.method, target, nil, hdr)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.wantStatus)
			}
			loc := resp.Header.Get("Location")
			if tt.wantRD == "" && loc != "" {
				t.Errorf("Location %q, want none", loc)
			}
			if tt.wantRD != "" {
				u, err := url.Parse(loc)
				if err != nil || u.Path != "/_wxgate/start" || u.Query().Get("rd") != tt.wantRD {
					t.Errorf("Location %q, want /_wxgate/start with rd=%s", loc, tt.wantRD)
				}
			}
			got := resp.Header.Get("X-WeChat-OpenID") != ""
			if got != tt.wantIdentity {
				t.Errorf("identity in the answer: %v, want %v", got, tt.wantIdentity)
			}
			if !tt.wantIdentity {
				for _, h := range identityHeaders {
					if v := resp.Header.Get(h); v != "" {
						t.Errorf("%s = %q", h, v)
					}
				}
			}
		})
	}
}

// TestForwardAuthRedirectModeAPI: ?mode=redirect does not send an API
// client to a login page; it gets the 401 JSON with the link.
func TestForwardAuthRedirectModeAPI(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	resp := e.browser("caddy").ask("?mode=redirect", map[string]string{"X-Forwarded-Uri": "/api/x", "X-Forwarded-Host": host})
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		t.Fatalf("status %d, Content-Type %q; want 401 JSON", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestForwardAuthTrailingSlash: a proxy that names the request in headers
// but asks {prefix}/auth/ (an address written with a trailing slash, which
// fiber's routing used to take as {prefix}/auth) does not get the path
// form's decision for "/": that would let every request through as the
// site's root, whatever X-Forwarded-Uri says.
func TestForwardAuthTrailingSlash(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	for _, hdr := range []map[string]string{
		{"X-Forwarded-Uri": "/vip/x", "X-Forwarded-Host": host},
		{"X-Forwarded-Uri": "/vip/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": host},
		{"X-Original-URL": e.url + "/vip/x"},
		{"X-Forwarded-Method": "POST"},
	} {
		hdr["Cookie"] = alice.sessionCookie()
		for _, q := range []string{"/", "/?mode=redirect"} {
			resp := e.browser("traefik").ask(q, hdr)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Wechat-Openid") != "" {
				t.Errorf("/_wxgate/auth%s with %v: %d, identity %q; want 400: the request is named in headers too", q, hdr, resp.StatusCode, resp.Header.Get("X-Wechat-Openid"))
			}
		}
	}
}

// TestForwardAuthCookie: an allowed answer carries the Cookie the app may
// see, the browser's without wxgate's cookies, for the proxy to pass
// instead; empty when only wxgate's were there.
func TestForwardAuthCookie(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	session := alice.sessionCookie()
	tests := []struct {
		name, uri, cookie string
		want              string
		wantHeader        bool
	}{
		{"logged in, with the app's cookies", "/orders", "a=1; " + session + "; wxgate_login=x; b=2", "a=1; b=2", true},
		{"logged in, only wxgate's", "/orders", session, "", true},
		{"public", "/public/a", "theme=dark;" + session, "theme=dark", true},
		{"__Host- spelling", "/public/a", "__Host-wxgate_session=x; c=3", "c=3", true},
		{"no Cookie", "/public/a", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"X-Forwarded-Uri": tt.uri, "X-Forwarded-Host": host}
			if tt.cookie != "" {
				hdr["Cookie"] = tt.cookie
			}
			resp := e.browser("nginx").ask("", hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got, ok := resp.Header["Cookie"]
			if ok != tt.wantHeader || strings.Join(got, "; ") != tt.want {
				t.Errorf("answer's Cookie %q (present %v), want %q (present %v)", got, ok, tt.want, tt.wantHeader)
			}
		})
	}
}

// TestForwardAuthAbsoluteForm: a proxy asking with an absolute-form target
// (the edge accepts it with the Host's authority) is read like one asking
// in origin form, in both forms of the question.
func TestForwardAuthAbsoluteForm(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	for _, tt := range []struct {
		name, target, extra string
		want                int
	}{
		{"header form", e.url + "/_wxgate/auth", "X-Forwarded-Uri: /denied/x\r\n", 403},
		{"header form, redirect mode", e.url + "/_wxgate/auth?mode=redirect", "X-Forwarded-Uri: /orders\r\n", 302},
		{"path form", e.url + "/_wxgate/auth/orders?id=7", "", 302},
		{"path form, deny", e.url + "/_wxgate/auth/denied/x", "", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.dial().send("GET " + tt.target + " HTTP/1.1\r\nHost: " + host + "\r\n" + tt.extra + "Connection: close\r\n\r\n")
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s: %d, want %d: %.200s", tt.target, resp.StatusCode, tt.want, body)
			}
		})
	}
}

// TestForwardAuthWebSocketOrigin: a proxy asking about a WebSocket
// handshake (nginx and Traefik drop the hop-by-hop Upgrade from the
// question but pass Sec-WebSocket-Key and Origin) gets the same
// cross-site WebSocket hijacking check as a handshake wxgate proxies
// itself: with the session cookie from another site's page, 403, never
// the identity for the app's socket.
func TestForwardAuthWebSocketOrigin(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	ask := func(origin string, ws bool, auth string) *http.Response {
		hdr := map[string]string{"X-Forwarded-Uri": "/ws/echo", "X-Forwarded-Host": host}
		if auth == "" {
			hdr["Cookie"] = alice.sessionCookie()
		} else {
			hdr["X-Forwarded-Uri"], hdr["Authorization"] = "/api/ws/echo", auth
		}
		if origin != "" {
			hdr["Origin"] = origin
		}
		if ws {
			hdr["Sec-WebSocket-Key"], hdr["Sec-WebSocket-Version"] = "dGhlIHNhbXBsZSBub25jZQ==", "13"
		}
		return e.browser("nginx").ask("", hdr)
	}
	for _, origin := range []string{"http://evil.example", "null", "http://good.example.com.evil.com"} {
		resp := ask(origin, true, "")
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Wechat-Openid") != "" {
			t.Errorf("a WebSocket with the cookie from Origin %q: %d (X-WeChat-OpenID %q), want 403 without identity",
				origin, resp.StatusCode, resp.Header.Get("X-Wechat-Openid"))
		}
	}
	for _, tc := range []struct {
		name, origin string
		ws           bool
	}{
		{"own origin", e.url, true},
		{"allowed_redirect_hosts", "http://good.example.com", true},
		{"no Origin", "", true},
		{"not a WebSocket", "http://evil.example", false},
	} {
		if resp := ask(tc.origin, tc.ws, ""); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Wechat-Openid") == "" {
			t.Errorf("%s: %d, want 200 with the identity", tc.name, resp.StatusCode)
		}
	}
	pair := e.api().mpLogin("dora")
	if resp := ask("http://evil.example", true, "Bearer "+pair["access_token"].(string)); resp.StatusCode != http.StatusOK {
		t.Errorf("a bearer token from another origin: %d, want 200", resp.StatusCode)
	}
}

// TestForwardAuthCookieAsSent: the Cookie an allowed answer carries keeps
// the other cookies' bytes as the browser sent them (quotes too) and every
// Cookie line, on public and login routes.
func TestForwardAuthCookieAsSent(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	for _, uri := range []string{"/orders", "/public/a"} {
		raw := "GET /_wxgate/auth HTTP/1.1\r\nHost: " + host + "\r\nX-Forwarded-Uri: " + uri + "\r\n" +
			"Cookie: a=\"q v\"; " + alice.sessionCookie() + "\r\nCookie: b=2; wxgate_login=x\r\nConnection: close\r\n\r\n"
		resp, body := e.dial().send(raw)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %.200s", uri, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("Cookie"), `a="q v"; b=2`; got != want {
			t.Errorf("%s: answer's Cookie %q, want %q", uri, got, want)
		}
	}
}
