package proxy_test

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var primaryLinkRE = regexp.MustCompile(`<a class="btn primary" href="([^"]+)">([^<]+)</a>`)

// TestPageActions: the pages' ways on. A 502 has a button that asks for the
// same page again, with the request ID shown; the logout confirmation has a
// cancel link back; a refused consent retried asks for the same scope.
func TestPageActions(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")

	resp, body := b.get("/down/x?y=1", nil)
	m := primaryLinkRE.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusBadGateway || m == nil || html.UnescapeString(m[1]) != "/down/x?y=1" || m[2] != "重试" {
		t.Errorf("502 page: %d, primary link %q; want a 重试 button to /down/x?y=1: %.400s", resp.StatusCode, m, body)
	}
	if rid := resp.Header.Get("X-Request-Id"); rid == "" || !strings.Contains(body, rid) {
		t.Errorf("502 page does not show its request ID %q", rid)
	}
	// A POST cannot be repeated by a link.
	post := b.do(http.MethodPost, "/down/x", strings.NewReader("a=1"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	defer post.Body.Close()
	pb, _ := io.ReadAll(post.Body)
	if primaryLinkRE.Match(pb) {
		t.Errorf("502 page of a POST offers a link that would repeat it as a GET")
	}

	_, body = b.get("/_wxgate/logout?rd=%2Forders", nil)
	if !strings.Contains(body, `href="/orders">取消</a>`) {
		t.Errorf("logout page has no cancel link back to /orders: %.600s", body)
	}

	// A refused userinfo consent: its retry asks for userinfo again.
	carol := e.browser(weChatUA)
	auth := carol.expectRedirect(carol.expectRedirect("/profile/me"))
	resp, body = carol.get(carol.authorize(auth, "carol", "deny"), nil)
	m = primaryLinkRE.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusForbidden || m == nil {
		t.Fatalf("refused consent: %d without a retry link: %.400s", resp.StatusCode, body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || u.Query().Get("scope") != "userinfo" || u.Query().Get("rd") != "/profile/me" {
		t.Errorf("retry after a refused consent: %q, want /start with rd=/profile/me and scope=userinfo", m[1])
	}
}

// TestJSONDescriptionLanguage: a JSON error is in Chinese only when the
// client's Accept-Language prefers Chinese to English; a client naming
// neither ("fr", "ja-JP", "*", an Android app in German) or refusing
// Chinese with q=0 reads English, as one sending none does. Pages keep
// Chinese as their default.
func TestJSONDescriptionLanguage(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	for _, tc := range []struct {
		al     string
		wantZh bool
	}{
		{"", false},
		{"zh-CN,zh;q=0.9", true},
		{"en-US,en;q=0.9", false},
		{"fr-FR", false},
		{"ja-JP,ja;q=0.9", false},
		{"*", false},
		{"de;q=0.9, zh;q=0.5", true},
		{"zh;q=0, en;q=0.1", false},
		{"zh;q=0", false},
		{"en;q=0.4, zh-TW;q=0.8", true},
		{"zh;q=NaN, en;q=0.2", false},
		{"zh;q=2, en;q=0.2", false},
		{strings.Repeat("x-private,", 300) + "zh", true},
	} {
		b.lang = tc.al
		resp, body := b.get("/api/x", nil)
		zh := strings.Contains(body, "请先登录")
		if resp.StatusCode != http.StatusUnauthorized || zh != tc.wantZh {
			t.Errorf("Accept-Language %.40q: %d %s; want Chinese %v", tc.al, resp.StatusCode, body, tc.wantZh)
		}
	}
}
