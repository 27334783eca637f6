package proxy_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestProbes: a favicon or robots.txt asked without a login on a login
// route starts no login: 404 by default, 401 without a redirect, or the
// upstream without identity, as [policy] probe_answer says. With a login,
// it is forwarded as any other path.
func TestProbes(t *testing.T) {
	for _, tc := range []struct {
		answer     string
		wantStatus int
	}{
		{"", http.StatusNotFound},
		{`probe_answer = "401"`, http.StatusUnauthorized},
		{`probe_answer = "upstream"`, http.StatusOK},
	} {
		t.Run("answer "+tc.answer, func(t *testing.T) {
			e := newEnvOpts(t, envOptions{policyKeys: tc.answer})
			anon := e.browser(weChatUA)
			for _, path := range []string{"/favicon.ico", "/robots.txt"} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					resp := anon.do(method, path, nil, map[string]string{"X-WeChat-OpenID": "forged"})
					resp.Body.Close()
					if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != "" {
						t.Errorf("%s %s without a login: %d to %q, want %d and no login", method, path, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus)
					}
				}
			}
			if tc.wantStatus == http.StatusOK {
				if got := anon.upstreamView("/favicon.ico", map[string]string{"X-WeChat-OpenID": "forged"}); first(got.Headers["X-Wechat-Openid"]) != "" {
					t.Errorf("the upstream got an identity for an anonymous probe: %v", got.Headers)
				}
			}
			// Not probes: another path, another method.
			if loc := anon.expectRedirect("/favicon.ico.bak"); !strings.Contains(loc, "/_wxgate/start") {
				t.Errorf("GET /favicon.ico.bak: Location %q, want the login", loc)
			}
			if resp := anon.do(http.MethodPost, "/favicon.ico", nil, nil); resp.StatusCode == tc.wantStatus && tc.wantStatus != http.StatusUnauthorized {
				t.Errorf("POST /favicon.ico answered as a probe (%d)", resp.StatusCode)
			}
			alice := e.browser(weChatUA)
			alice.login("/", "alice")
			if got := alice.upstreamView("/favicon.ico", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("alice").OpenID {
				t.Errorf("a logged-in favicon: upstream saw %v, want alice", got.Headers)
			}
		})
	}
}

// TestForwardAuthProbes: the forward-auth question about a probe answers
// the same way, never with a login Location (nginx would redirect).
func TestForwardAuthProbes(t *testing.T) {
	for _, tc := range []struct {
		answer     string
		wantStatus int
	}{
		{"", http.StatusNotFound},
		{`probe_answer = "401"`, http.StatusUnauthorized},
		{`probe_answer = "upstream"`, http.StatusOK},
	} {
		e := newEnvOpts(t, envOptions{policyKeys: tc.answer, serverKeys: `trusted_proxies = ["127.0.0.1/32"]`})
		host := strings.TrimPrefix(e.url, "http://")
		resp := e.browser("nginx").ask("?mode=redirect", map[string]string{"X-Forwarded-Uri": "/favicon.ico", "X-Forwarded-Host": host})
		if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != "" || resp.Header.Get("X-WeChat-OpenID") != "" {
			t.Errorf("%s: forward auth on /favicon.ico: %d to %q, want %d, no login, no identity", tc.answer, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus)
		}
	}
}

// TestForwardAuthProbeAsSent: the proxy forwards the path the client sent,
// not the one wxgate would forward, so a forward-auth question is a probe
// only when the path as sent is the probe: "//favicon.ico" or
// "/%66avicon.ico" asks for a login, in the header form and Envoy's path
// form, and one with dot segments ("/orders/../favicon.ico", which an app
// routing before it removes them sees as /orders) is refused, instead of
// reaching the app without a login.
func TestForwardAuthProbeAsSent(t *testing.T) {
	e := newEnvOpts(t, envOptions{policyKeys: `probe_answer = "upstream"`, serverKeys: `trusted_proxies = ["127.0.0.1/32"]`})
	host := strings.TrimPrefix(e.url, "http://")
	nginx := e.browser("nginx")
	for _, tc := range []struct {
		path          string
		header, envoy int
	}{
		{"/favicon.ico", http.StatusOK, http.StatusOK},
		{"//favicon.ico", http.StatusUnauthorized, http.StatusFound},
		{"/%66avicon.ico", http.StatusUnauthorized, http.StatusFound},
		{"/orders/../favicon.ico", http.StatusForbidden, http.StatusForbidden},
		{"/orders/x/../../favicon.ico", http.StatusForbidden, http.StatusForbidden},
		{"/./favicon.ico", http.StatusForbidden, http.StatusForbidden},
	} {
		resp := nginx.ask("", map[string]string{"X-Forwarded-Uri": tc.path, "X-Forwarded-Host": host})
		if resp.StatusCode != tc.header {
			t.Errorf("forward auth on %s: %d, want %d", tc.path, resp.StatusCode, tc.header)
		}
		raw, body := e.dial().send("GET /_wxgate/auth" + tc.path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
		if raw == nil || raw.StatusCode != tc.envoy {
			t.Errorf("Envoy's question on %s: %v %.200s, want %d", tc.path, raw, body, tc.envoy)
		}
	}
}

// TestForwardAuthDotSegments: a forward-auth question whose path has dot
// segments, literal or encoded, is refused with 403 for everyone. The
// proxy passes that path to the app as sent: alice, logged in but not on
// /vip's allow list, asking "/vip/../orders" got 200 with her identity
// (wxgate read /orders), and an app that routes before removing dot
// segments served its /vip handler to her.
func TestForwardAuthDotSegments(t *testing.T) {
	e := authEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	alice := e.browser(weChatUA)
	alice.login("/", "alice")
	for _, path := range []string{"/vip/../orders", "/vip/x/../../orders", "/vip/%2e%2e/orders", "/vip/.%2E/orders", "/vip//../orders", "/vip/./x", "/vip/..", "/orders/../public/a"} {
		resp := e.browser("nginx").ask("", map[string]string{"X-Forwarded-Uri": path, "X-Forwarded-Host": host, "Cookie": alice.sessionCookie()})
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-WeChat-OpenID") != "" || resp.Header.Get("Location") != "" {
			t.Errorf("forward auth on %s for alice: %d (identity %q), want 403 without identity", path, resp.StatusCode, resp.Header.Get("X-WeChat-OpenID"))
		}
	}
	// Dots inside a segment are no dot segments.
	for _, path := range []string{"/orders/a.b", "/orders/..a", "/orders/.well-known", "/orders/x..", "/orders/%2e%2ex"} {
		resp := e.browser("nginx").ask("", map[string]string{"X-Forwarded-Uri": path, "X-Forwarded-Host": host, "Cookie": alice.sessionCookie()})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("forward auth on %s for alice: %d, want 200", path, resp.StatusCode)
		}
	}
}
