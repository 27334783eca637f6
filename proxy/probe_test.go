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
