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

func TestBaseFlow(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)

	start := b.expectRedirect("/orders?id=7")
	if want := e.url + "/_wxgate/start?rd=%2Forders%3Fid%3D7&scope=base"; start != want {
		t.Fatalf("GET /orders: Location = %q, want %q", start, want)
	}
	auth := b.expectRedirect(start)
	// WeChat checks the parameter order; connect_redirect and the fragment
	// must be there.
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(e.simURL+"/connect/oauth2/authorize?appid="+oaID+"&redirect_uri="+url.QueryEscape(e.url+"/_wxgate/callback")+"&response_type=code&scope=snsapi_base&state=") + `([a-zA-Z0-9]{32})&connect_redirect=1#wechat_redirect$`)
	if !re.MatchString(auth) {
		t.Fatalf("authorize URL = %q, want the shape %s", auth, re)
	}
	cb := b.authorize(auth, "alice", "allow")
	if !strings.HasPrefix(cb, e.url+"/_wxgate/callback?code=") {
		t.Fatalf("simulator sent the browser to %q", cb)
	}
	final := b.expectRedirect(cb)
	if final != e.url+"/orders?id=7" {
		t.Errorf("after the callback: Location = %q, want the page the login started from", final)
	}
	if b.cookie("wxgate_session") == "" {
		t.Fatal("no session cookie after login")
	}
	got := b.upstreamView("/orders?id=7", nil)
	alice := e.user("alice")
	for name, want := range map[string]string{
		"X-Wechat-Openid":  alice.OpenID,
		"X-Wechat-Unionid": alice.UnionID,
		"X-Wechat-Appid":   oaID,
		"X-Wechat-Scope":   "snsapi_base",
		"X-Forwarded-User": alice.UnionID,
	} {
		if v := got.Headers[name]; len(v) != 1 || v[0] != want {
			t.Errorf("upstream %s = %q, want %q", name, v, want)
		}
	}
	if v := got.Headers["X-Wechat-Nickname"]; v != nil {
		t.Errorf("base scope forwarded a nickname: %q", v)
	}
	if got.URI != "/orders?id=7" {
		t.Errorf("upstream URI = %q, want /orders?id=7", got.URI)
	}
	// The userinfo endpoint answers the identity, without tokens.
	resp, body := b.get("/_wxgate/userinfo", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, alice.OpenID) || strings.Contains(body, "token") {
		t.Errorf("/_wxgate/userinfo = %d %s", resp.StatusCode, body)
	}
}

func TestEscalationToUserinfo(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	baseCookie := b.cookie("wxgate_session")

	start := b.expectRedirect("/profile/me")
	if !strings.Contains(start, "scope=userinfo") || !strings.Contains(start, "rd=%2Fprofile%2Fme") {
		t.Fatalf("base session on a userinfo route: Location = %q", start)
	}
	auth := b.expectRedirect(start)
	if !strings.Contains(auth, "scope=snsapi_userinfo") {
		t.Fatalf("authorize URL %q does not ask for snsapi_userinfo", auth)
	}
	// Without sim_user the simulator shows its consent page.
	resp, page := b.get(auth, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "sim_decision") {
		t.Fatalf("consent page: %d %.200s", resp.StatusCode, page)
	}
	cb := b.authorize(auth, "alice", "allow")
	if final := b.expectRedirect(cb); final != e.url+"/profile/me" {
		t.Errorf("after consent: Location = %q, want /profile/me", final)
	}
	got := b.upstreamView("/profile/me", nil)
	alice := e.user("alice")
	nick, _ := url.PathUnescape(first(got.Headers["X-Wechat-Nickname"]))
	if nick != alice.Nickname {
		t.Errorf("upstream nickname = %q, want %q", nick, alice.Nickname)
	}
	if first(got.Headers["X-Wechat-Scope"]) != "snsapi_userinfo" || first(got.Headers["X-Wechat-Avatar"]) == "" {
		t.Errorf("upstream scope/avatar = %q / %q", got.Headers["X-Wechat-Scope"], got.Headers["X-Wechat-Avatar"])
	}
	if c := b.cookie("wxgate_session"); c == baseCookie {
		t.Error("the session ID did not change at the new login")
	}
	// The old session is gone on the server.
	old := e.browser(weChatUA)
	old.setCookie("wxgate_session", baseCookie)
	if resp, _ := old.get("/", nil); resp.StatusCode != http.StatusFound {
		t.Errorf("the replaced session still works: status %d", resp.StatusCode)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func TestRefusal(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ lang, want string }{
		{"", "你已取消授权"},
		{"en-US,en;q=0.9,zh-CN;q=0.8", "You declined"},
		{"zh-CN,zh;q=0.9,en;q=0.8", "你已取消授权"},
	} {
		b := e.browser(weChatUA)
		b.lang = tc.lang
		auth := b.expectRedirect(b.expectRedirect("/"))
		cb := b.authorize(auth, "bob", "deny")
		if strings.Contains(cb, "code=") {
			t.Fatalf("refusal redirect carries a code: %q", cb)
		}
		resp, body := b.get(cb, nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Errorf("refusal page (Accept-Language %q): %d, want 403 with %q; body %.300s", tc.lang, resp.StatusCode, tc.want, body)
		}
		if !strings.Contains(body, "/_wxgate/start") {
			t.Error("refusal page offers no way to try again")
		}
		if b.cookie("wxgate_session") != "" {
			t.Error("a refusal set a session cookie")
		}
	}
}

func TestReplayedCallback(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	start := b.expectRedirect("/page")
	cb := b.authorize(b.expectRedirect(start), "alice", "allow")
	if got := b.expectRedirect(cb); got != e.url+"/page" {
		t.Fatalf("first callback: %q", got)
	}
	before := e.sim.Calls()["/sns/oauth2/access_token"]
	// Refresh, back button, or Android's double callback.
	for i := 0; i < 3; i++ {
		if got := b.expectRedirect(cb); got != e.url+"/page" {
			t.Errorf("replayed callback %d: Location %q, want /page", i, got)
		}
	}
	if n := e.sim.Calls()["/sns/oauth2/access_token"] - before; n != 0 {
		t.Errorf("replays redeemed the code %d more times, want 0", n)
	}
	// Same browser, session cookie lost: the login restarts, no 500.
	b.setCookie("wxgate_session", "")
	resp, _ := b.get(cb, nil)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), e.simURL) {
		t.Errorf("replay without the session: %d to %q, want a restarted login", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestBadCodeRestartsOnceThenErrorPage(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	auth := b.expectRedirect(b.expectRedirect("/x"))
	state := mustQuery(t, strings.TrimSuffix(auth, "#wechat_redirect"), "state")
	// A forged or expired code: WeChat says 40029.
	auth2 := b.expectRedirect(e.url + "/_wxgate/callback?code=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&state=" + state)
	if !strings.HasPrefix(auth2, e.simURL+"/connect/oauth2/authorize") {
		t.Fatalf("first bad code: Location %q, want a new authorize URL", auth2)
	}
	state2 := mustQuery(t, strings.TrimSuffix(auth2, "#wechat_redirect"), "state")
	resp, body := b.get(e.url+"/_wxgate/callback?code=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB&state="+state2, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录失败") {
		t.Errorf("second bad code: %d %.200s, want 400 error page", resp.StatusCode, body)
	}
}

func mustQuery(t *testing.T, raw, key string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get(key)
}

func TestStateFromAnotherBrowser(t *testing.T) {
	e := newEnv(t)
	victim := e.browser(weChatUA)
	auth := victim.expectRedirect(victim.expectRedirect("/"))
	cb := victim.authorize(auth, "alice", "allow")

	// The callback URL (state and code) carried to another browser.
	attacker := e.browser(weChatUA)
	resp, body := attacker.get(cb, nil)
	if resp.StatusCode != http.StatusForbidden || attacker.cookie("wxgate_session") != "" {
		t.Fatalf("foreign browser: status %d, session %q; want 403 and no session", resp.StatusCode, attacker.cookie("wxgate_session"))
	}
	if !strings.Contains(body, "另一个浏览器") {
		t.Errorf("foreign browser page: %.200s", body)
	}
	// An attacker that started its own login has a binding cookie, but not
	// the victim's.
	attacker.expectRedirect(attacker.expectRedirect("/"))
	if resp, _ := attacker.get(cb, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign browser with its own binding: %d, want 403", resp.StatusCode)
	}
	// The code was not redeemed: the victim still completes the login.
	if got := victim.expectRedirect(cb); got != e.url+"/" {
		t.Errorf("victim after the attempt: Location %q, want /", got)
	}
	// A state nobody issued, and a malformed one.
	for _, s := range []string{"ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", "short", "../../x", strings.Repeat("a", 500)} {
		resp, _ := victim.get(e.url+"/_wxgate/callback?code=x&state="+url.QueryEscape(s), nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("state %q: status %d, want 400", s, resp.StatusCode)
		}
	}
}

func TestSnapshotUserIsNotLoggedIn(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	auth := b.expectRedirect(b.expectRedirect("/profile/x"))
	cb := b.authorize(auth, "carol", "snapshot")
	resp, body := b.get(cb, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "scope=userinfo") {
		t.Errorf("snapshot callback: %d %.300s; want 403 asking to authorize", resp.StatusCode, body)
	}
	if b.cookie("wxgate_session") != "" {
		t.Error("a snapshot user got a session")
	}
}

func TestOutsideWeChat(t *testing.T) {
	e := newEnv(t)
	b := e.browser("Mozilla/5.0 (X11; Linux x86_64) Chrome/120")
	start := b.expectRedirect("/")
	resp, body := b.get(start, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "请在微信中打开") {
		t.Errorf("desktop start: %d %.200s", resp.StatusCode, body)
	}
	if strings.Contains(body, "flow=oa") {
		t.Error("the dev-only link shows outside dev mode")
	}
	b.lang = "en"
	if _, body := b.get(start, nil); !strings.Contains(body, "Open this page in WeChat") {
		t.Errorf("English page: %.200s", body)
	}
	// The dev link's parameter does nothing outside dev mode.
	if resp, _ := b.get(start+"&flow=oa", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("flow=oa outside dev: status %d, want the open-in-WeChat page", resp.StatusCode)
	}
	wecom := e.browser(weChatUA + " wxwork/4.1.0")
	if _, body := wecom.get(start, nil); !strings.Contains(body, "企业微信") {
		t.Errorf("WeCom page: %.200s", body)
	}
}

func TestLogout(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	cookie := b.cookie("wxgate_session")

	resp, body := b.get("/_wxgate/logout?rd=/public/bye", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `method="post"`) {
		t.Fatalf("GET logout: %d %.200s; want a confirm form", resp.StatusCode, body)
	}
	if resp, _ := b.get("/", nil); resp.StatusCode != http.StatusOK {
		t.Fatal("GET logout ended the session")
	}
	post := func(body string, hdr map[string]string) *http.Response {
		t.Helper()
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for k, v := range hdr {
			h[k] = v
		}
		resp := b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader(body), h)
		resp.Body.Close()
		return resp
	}
	// A cross-site form, or a POST with neither Origin nor the form's
	// token, does not log out.
	for name, hdr := range map[string]map[string]string{
		"foreign origin":     {"Origin": "https://evil.example"},
		"other port":         {"Origin": "http://127.0.0.1:1"},
		"no origin no token": nil,
		"null origin":        {"Origin": "null"},
	} {
		if resp := post("rd=%2Fpublic%2Fbye&token=guess", hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST logout, %s: %d, want 403", name, resp.StatusCode)
		}
		if resp, _ := b.get("/", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("POST logout, %s: ended the session", name)
		}
	}
	// The confirm form's token stands in for Origin.
	token := regexp.MustCompile(`name="token" value="([^"]+)"`).FindStringSubmatch(body)
	if token == nil {
		t.Fatalf("the confirm form has no token: %.300s", body)
	}
	resp = post("rd=%2Fpublic%2Fbye&token="+token[1], nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/public/bye" {
		t.Errorf("POST logout with the form's token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if b.cookie("wxgate_session") != "" {
		t.Error("the cookie was not cleared")
	}
	// The old cookie is dead server side.
	b.setCookie("wxgate_session", cookie)
	if resp, _ := b.get("/", nil); resp.StatusCode != http.StatusFound {
		t.Errorf("old cookie after logout: status %d, want a redirect to login", resp.StatusCode)
	}
	// A same-origin POST (what browsers send) needs no token.
	b.login("/", "alice")
	if resp := post("rd=%2F", map[string]string{"Origin": b.e.url}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("POST logout from the same origin: %d, want 303", resp.StatusCode)
	}
	if resp, _ := b.get("/", nil); resp.StatusCode != http.StatusFound {
		t.Errorf("after a same-origin logout: status %d, want a redirect to login", resp.StatusCode)
	}
}

func TestRedirectValidation(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	tests := []struct{ rd, want string }{
		{"/ok?x=1", "/ok?x=1"},
		{"/public/%E5%BE%AE", "/public/%E5%BE%AE"},
		{"https://good.example.com/x", "https://good.example.com/x"},
		{"https://a.trusted.example/x", "https://a.trusted.example/x"},
		{e.url + "/self", e.url + "/self"},
		{"//evil.com/x", "/"},
		{"///evil.com", "/"},
		{"/\\evil.com", "/"},
		{"\\\\evil.com", "/"},
		{"/%2F/evil.com", "/"},
		{"/%5Cevil.com", "/"},
		{"%2F%2Fevil.com", "/"},
		{" //evil.com", "/"},
		{"/\t/evil.com", "/"},
		{"/\n/evil.com", "/"},
		{"https://good.example.com@evil.com/", "/"},
		{"https://user:pw@good.example.com/", "/"},
		{"https://evil.com/", "/"},
		{"https://trusted.example/", "/"},
		{"https://good.example.com.evil.com/", "/"},
		{"javascript:alert(1)", "/"},
		{"data:text/html,x", "/"},
		{"HTTPS:evil.com", "/"},
		{"evil.com", "/"},
		{"", "/"},
	}
	for _, tc := range tests {
		form := url.Values{"rd": {tc.rd}}.Encode()
		resp := b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader(form), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		resp.Body.Close()
		if got := resp.Header.Get("Location"); got != tc.want {
			t.Errorf("logout rd=%q: Location %q, want %q", tc.rd, got, tc.want)
		}
	}
	// The same check guards the return after login.
	start := e.url + "/_wxgate/start?rd=" + url.QueryEscape("//evil.com/steal")
	cb := b.authorize(b.expectRedirect(start), "alice", "allow")
	if got := b.expectRedirect(cb); got != e.url+"/" {
		t.Errorf("login with rd=//evil.com: lands on %q, want /", got)
	}
}

// TestLogoutBadFormIsAPage: a malformed or oversized logout form (a
// browser's POST) gets the 400 page, not API JSON, and ends nothing.
func TestLogoutBadFormIsAPage(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	for name, body := range map[string]string{"bad escape": "rd=%zz", "over 64 KiB": "rd=" + strings.Repeat("a", 70<<10)} {
		resp := b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader(body),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": e.url})
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(page), "请求无效") {
			t.Errorf("%s: %d %.120q, want the 400 page", name, resp.StatusCode, page)
		}
		if got, _ := b.get("/", nil); got.StatusCode != http.StatusOK {
			t.Fatalf("%s: the session ended", name)
		}
	}
}

// TestOpenInWeChatLink: the open-in-WeChat page shows the page's own URL,
// to copy into WeChat: the public URL's origin and the path (issue 11: it
// showed http://localhost:8080orders), or the other host's absolute URL.
func TestOpenInWeChatLink(t *testing.T) {
	e := newEnv(t)
	b := e.browser("Mozilla/5.0 (X11; Linux x86_64) Chrome/120")
	for _, tc := range []struct{ rd, want string }{
		{"/orders?id=7", e.url + "/orders?id=7"},
		{"/", e.url + "/"},
		{"https://good.example.com/shop", "https://good.example.com/shop"},
	} {
		_, body := b.get("/_wxgate/start?rd="+url.QueryEscape(tc.rd), nil)
		if !strings.Contains(body, `id="link">`+html.EscapeString(tc.want)+"</code>") {
			t.Errorf("open-in-WeChat page for rd=%s: want the link %s in %.600s", tc.rd, tc.want, body)
		}
	}
}
