package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// lockedBuffer is a log sink the gateway's goroutines may write together.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newMultiHostEnv is a gateway whose official account's one domain is
// auth.example.com, serving a.example.com and the subdomains of
// multi.example besides. o may set sessionKeys, log, and publicURL and
// serverKeys, which default to auth.example.com and those hosts.
func newMultiHostEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open-1", Domain: "auth.example.com"},
		wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1"},
		wechatsim.App{AppID: webID, Secret: webSecret, Type: wechatsim.Website, OpenPlatformID: "open-1", Domain: "auth.example.com"},
	)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	o.sim, o.simURL, o.logLevel = sim, srv.URL, slog.LevelDebug
	if o.publicURL == "" {
		o.publicURL = "http://auth.example.com:{port}"
	}
	if o.serverKeys == "" {
		o.serverKeys = `handoff_hosts = ["a.example.com:{port}", ".multi.example:{port}"]`
	}
	return newEnvOpts(t, o)
}

// origin is the gateway's origin under another host name.
func (e *env) origin(host string) string {
	return "http://" + host + ":" + strings.TrimPrefix(e.url, "http://127.0.0.1:")
}

// hostBrowser is a browser for which every name under example.com and
// example resolves to the gateway: one browser visiting several sites.
func (e *env) hostBrowser(ua string) *browser {
	return e.browserTo(ua, strings.TrimPrefix(e.url, "http://"))
}

// browserTo is a browser whose connections to those names, and to the
// address from, go to addr.
func (e *env) browserTo(ua, addr string, from ...string) *browser {
	b := e.browser(ua)
	d := &net.Dialer{Timeout: 5 * time.Second}
	b.c.Transport = &http.Transport{DialContext: func(ctx context.Context, network, to string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(to); strings.HasSuffix(h, ".example.com") || strings.HasSuffix(h, ".example") || slices.Contains(from, to) {
			to = addr
		}
		return d.DialContext(ctx, network, to)
	}}
	return b
}

// cookieAt is the value of the browser's cookie name for rawURL.
func (b *browser) cookieAt(rawURL, name string) string {
	u, _ := url.Parse(rawURL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// setCookieHeader is the Set-Cookie line of resp for cookie name, or "".
func setCookieHeader(resp *http.Response, name string) string {
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, name+"=") {
			return v
		}
	}
	return ""
}

// loginFrom runs a login for user that starts at page (an absolute URL on
// a hand-off host) up to the auth host's callback, and returns the
// callback's answer with its body read.
func (b *browser) loginFrom(page, user string) *http.Response {
	b.e.t.Helper()
	start := b.expectRedirect(page)
	toAuth := b.expectRedirect(start)
	authz := b.expectRedirect(toAuth)
	cb := b.authorize(authz, user, "allow")
	resp, body := b.get(cb, nil)
	if resp.StatusCode != http.StatusFound {
		b.e.t.Fatalf("callback %s: %d %.300s", cb, resp.StatusCode, body)
	}
	return resp
}

// ticketOf is the ticket of a /handoff URL.
func ticketOf(t *testing.T, handoff string) string {
	t.Helper()
	u, err := url.Parse(handoff)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("ticket")
}

// TestHandoffLoginOnAnotherHost: a login that starts on a.example.com goes
// through auth.example.com (the one callback domain) and comes back with a
// one-time ticket that logs the browser in on a.example.com only. The
// ticket is in no log, no Referer and nothing the upstream gets.
func TestHandoffLoginOnAnotherHost(t *testing.T) {
	var logs lockedBuffer
	e := newMultiHostEnv(t, envOptions{log: &logs})
	a, auth, other := e.origin("a.example.com"), e.origin("auth.example.com"), e.origin("b.multi.example")
	b := e.hostBrowser(weChatUA)

	start := b.expectRedirect(a + "/orders?id=7")
	if want := a + "/_wxgate/start?rd=%2Forders%3Fid%3D7&scope=base"; start != want {
		t.Fatalf("GET /orders on a: Location = %q, want %q", start, want)
	}
	toAuth := b.expectRedirect(start)
	u, _ := url.Parse(toAuth)
	q := u.Query()
	if !strings.HasPrefix(toAuth, auth+"/_wxgate/start?") || q.Get("rd") != a+"/orders?id=7" || q.Get("scope") != "base" {
		t.Fatalf("start on a sent the browser to %q, want auth's start with rd on a", toAuth)
	}
	binding := b.cookieAt(a, "wxgate_login")
	if binding == "" || q.Get("hb") != session.Hash(binding) {
		t.Fatalf("hb = %q, want the hash of a's binding cookie %q", q.Get("hb"), binding)
	}
	authz := b.expectRedirect(toAuth)
	if !strings.Contains(authz, url.QueryEscape(auth+"/_wxgate/callback")) {
		t.Fatalf("authorize URL %q does not come back to the auth host", authz)
	}
	cb := b.authorize(authz, "alice", "allow")
	resp, _ := b.get(cb, nil)
	handoff := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(handoff, a+"/_wxgate/handoff?") {
		t.Fatalf("callback: %d to %q, want a redirect to a's handoff\n%s", resp.StatusCode, handoff, logs.String())
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("callback's Referrer-Policy = %q", resp.Header.Get("Referrer-Policy"))
	}
	if setCookieHeader(resp, "wxgate_session") != "" {
		t.Errorf("the auth host set a session cookie: %q", setCookieHeader(resp, "wxgate_session"))
	}
	ticket := ticketOf(t, handoff)
	if !session.ValidID(ticket) {
		t.Fatalf("ticket %q is not 256 random bits", ticket)
	}

	// The ticket on another served host: refused, and not used up.
	wrong := strings.Replace(handoff, a, other, 1)
	resp, body := b.get(wrong, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录已过期") {
		t.Errorf("ticket on b.multi.example: %d %.200s", resp.StatusCode, body)
	}

	resp, _ = b.get(handoff, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/orders?id=7" {
		t.Fatalf("handoff: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("handoff's Referrer-Policy %q, Cache-Control %q", resp.Header.Get("Referrer-Policy"), resp.Header.Get("Cache-Control"))
	}
	sc := setCookieHeader(resp, "wxgate_session")
	if sc == "" || strings.Contains(strings.ToLower(sc), "domain=") {
		t.Errorf("handoff's session cookie %q, want one for a.example.com only", sc)
	}
	cookie := b.cookieAt(a, "wxgate_session")
	for _, h := range []string{auth, other, e.origin("example.com")} {
		if v := b.cookieAt(h, "wxgate_session"); v != "" {
			t.Errorf("a session cookie reaches %s", h)
		}
	}
	got := b.upstreamView(a+"/orders?id=7", nil)
	alice := e.user("alice")
	if first(got.Headers["X-Wechat-Openid"]) != alice.OpenID || first(got.Headers["X-Wechat-Scope"]) != "snsapi_base" {
		t.Errorf("upstream identity on a: %v", got.Headers)
	}
	if strings.Contains(mustJSON(got), ticket) || got.URI != "/orders?id=7" {
		t.Errorf("the upstream saw the ticket: %+v", got)
	}

	// In another browser (no binding cookie on a): refused
	// (TestHandoffForgedHbTicketUsedUp: before its use, too, and used up).
	resp, body = e.hostBrowser(weChatUA).get(handoff, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "另一个浏览器") {
		t.Errorf("ticket in another browser: %d %.200s", resp.StatusCode, body)
	}

	// The same browser asking again (a double redirect) continues, logged
	// in as before, without a new session.
	resp, _ = b.get(handoff, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/orders?id=7" || setCookieHeader(resp, "wxgate_session") != "" {
		t.Errorf("repeated handoff: %d to %q, Set-Cookie %q", resp.StatusCode, resp.Header.Get("Location"), setCookieHeader(resp, "wxgate_session"))
	}
	if b.cookieAt(a, "wxgate_session") != cookie {
		t.Error("the repeated handoff changed the session")
	}
	// Used, for a browser not logged in with it (here: the same browser
	// without its session): refused with the login offered again.
	b.c.Jar.SetCookies(mustURL(a), []*http.Cookie{{Name: "wxgate_session", Value: "", Path: "/", MaxAge: -1}})
	resp, body = b.get(handoff, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `href="/_wxgate/start?rd=%2Forders%3Fid%3D7"`) {
		t.Errorf("used ticket: %d %.400s", resp.StatusCode, body)
	}
	if strings.Contains(logs.String(), ticket) {
		t.Error("the ticket is in the log")
	}
	if !strings.Contains(logs.String(), "path=/_wxgate/handoff") {
		t.Error("the log has no line for the handoff: the check above proves nothing")
	}
}

func mustURL(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u
}

// TestHandoffTicketRefusals: forged, malformed and expired tickets and
// return URLs get a 4xx page offering the login on this host again, never
// a 500, and end nobody's session.
func TestHandoffTicketRefusals(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{})
	a := e.origin("a.example.com")
	b := e.hostBrowser(weChatUA)
	resp := b.loginFrom(a+"/orders", "alice")
	handoff := resp.Header.Get("Location")
	ticket := ticketOf(t, handoff)

	// Another browser, logged in on a, meets every bad ticket: it stays
	// logged in.
	c := e.hostBrowser(weChatUA)
	if r, _ := c.get(c.loginFrom(a+"/x", "bob").Header.Get("Location"), nil); r.StatusCode != http.StatusFound {
		t.Fatalf("bob's handoff: %d", r.StatusCode)
	}
	bob := c.cookieAt(a, "wxgate_session")
	flipped := []byte(ticket)
	flipped[0] ^= 1
	for name, raw := range map[string]string{
		"none":       "",
		"short":      "x",
		"unknown":    session.NewID(),
		"one bit":    string(flipped),
		"cut":        ticket[:len(ticket)-1],
		"longer":     ticket + "A",
		"its hash":   session.Hash(ticket),
		"NUL":        ticket[:42] + "\x00",
		"long":       strings.Repeat("A", 1500),
		"non-ASCII":  ticket[:40] + "登录",
		"stuffed":    ticket + "&ticket=" + ticket,
		"uppercased": strings.ToUpper(ticket),
	} {
		resp, body := c.get(a+"/_wxgate/handoff?ticket="+url.QueryEscape(raw)+"&rd=%2Fx", nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录已过期") || !strings.Contains(body, `href="/_wxgate/start?rd=%2Fx"`) {
			t.Errorf("%s ticket: %d %.300s", name, resp.StatusCode, body)
		}
		if resp.Header.Get("Content-Language") != "zh-CN" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s ticket: Content-Language %q, Referrer-Policy %q", name, resp.Header.Get("Content-Language"), resp.Header.Get("Referrer-Policy"))
		}
	}
	c.lang = "en"
	if resp, body := c.get(a+"/_wxgate/handoff?ticket=x", nil); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Login link expired") {
		t.Errorf("English: %d %.300s", resp.StatusCode, body)
	}
	if got := c.upstreamView(a+"/x", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("bob").OpenID || c.cookieAt(a, "wxgate_session") != bob {
		t.Errorf("bob's session after the bad tickets: %v", got.Headers)
	}

	// A return URL that would leave the host becomes its root.
	for _, rd := range []string{"//evil.example.org/", "https://evil.example.org/", e.origin("auth.example.com") + "/x", "/\\evil", "javascript:alert(1)"} {
		_, body := c.get(a+"/_wxgate/handoff?ticket=x&rd="+url.QueryEscape(rd), nil)
		if !strings.Contains(body, `href="/_wxgate/start?rd=%2F"`) {
			t.Errorf("rd %q: retry link not the root: %.400s", rd, body)
		}
	}

	// Thirty seconds on, alice's ticket has expired.
	e.advance(session.TicketTTL)
	resp, body := b.get(handoff, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录已过期") || setCookieHeader(resp, "wxgate_session") != "" {
		t.Errorf("expired ticket: %d %.300s", resp.StatusCode, body)
	}
}

// TestHandoffOnlyForListedHosts: a host not named by the config is not a
// target: its return URL becomes the auth host's root, as safeRedirect
// makes it; and a return URL on a listed host started elsewhere goes to
// that host first, so that the ticket is bound to its browser there.
func TestHandoffOnlyForListedHosts(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{})
	auth, a := e.origin("auth.example.com"), e.origin("a.example.com")
	b := e.hostBrowser(weChatUA)
	authz := b.expectRedirect(auth + "/_wxgate/start?rd=" + url.QueryEscape(e.origin("c.example.com")+"/x"))
	final := b.expectRedirect(b.authorize(authz, "alice", "allow"))
	if final != auth+"/" {
		t.Errorf("login for an unlisted host ended at %q, want the auth host's root", final)
	}
	if b.cookieAt(auth, "wxgate_session") == "" || b.cookieAt(e.origin("c.example.com"), "wxgate_session") != "" {
		t.Error("the session is not the auth host's alone")
	}
	// A start on the auth host for a listed host, with no hb: to that
	// host's start first, which comes back with one.
	to := b.expectRedirect(auth + "/_wxgate/start?rd=" + url.QueryEscape(a+"/y") + "&scope=userinfo")
	if want := a + "/_wxgate/start?rd=" + url.QueryEscape(a+"/y") + "&scope=userinfo"; to != want {
		t.Errorf("start for a on the auth host without hb: to %q, want %q", to, want)
	}
	// A forged hb (not this browser's binding on a) gets a ticket that a
	// refuses.
	authz = b.expectRedirect(auth + "/_wxgate/start?rd=" + url.QueryEscape(a+"/y") + "&hb=" + session.Hash("forged"))
	handoff := b.expectRedirect(b.authorize(authz, "alice", "allow"))
	if resp, _ := b.get(handoff, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("ticket bound to a forged hb: %d, want 403", resp.StatusCode)
	}
}

// TestHandoffSharedCookieDomain: with [session] cookie_domain covering the
// auth host and a.example.com, the cookie the callback sets already logs
// the browser in there: no ticket. A host outside it still gets one.
func TestHandoffSharedCookieDomain(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{sessionKeys: `cookie_domain = ".example.com"`})
	a, auth, other := e.origin("a.example.com"), e.origin("auth.example.com"), e.origin("x.multi.example")
	b := e.hostBrowser(weChatUA)
	resp := b.loginFrom(a+"/orders", "alice")
	if loc := resp.Header.Get("Location"); loc != a+"/orders" {
		t.Fatalf("callback sent the browser to %q, want straight back to a", loc)
	}
	if sc := setCookieHeader(resp, "wxgate_session"); !strings.Contains(strings.ToLower(sc), "domain=example.com") {
		t.Errorf("session cookie %q has no Domain=example.com", sc)
	}
	alice := e.user("alice")
	for _, h := range []string{a, auth} {
		if got := b.upstreamView(h+"/orders", nil); first(got.Headers["X-Wechat-Openid"]) != alice.OpenID {
			t.Errorf("not logged in on %s: %v", h, got.Headers)
		}
	}
	// A host outside the domain gets a ticket and a host-only cookie.
	resp = b.loginFrom(other+"/z", "alice")
	handoff := resp.Header.Get("Location")
	if !strings.HasPrefix(handoff, other+"/_wxgate/handoff?") || !session.ValidID(ticketOf(t, handoff)) {
		t.Fatalf("login for x.multi.example: to %q, want its handoff", handoff)
	}
	resp, _ = b.get(handoff, nil)
	if sc := setCookieHeader(resp, "wxgate_session"); resp.StatusCode != http.StatusFound || sc == "" || strings.Contains(strings.ToLower(sc), "domain=") {
		t.Errorf("handoff on x.multi.example: %d, cookie %q", resp.StatusCode, sc)
	}
	// Logging out on a clears the shared cookie (same Domain).
	token := logoutFormToken(t, b, a+"/_wxgate/logout")
	lresp := b.do(http.MethodPost, a+"/_wxgate/logout", strings.NewReader("token="+token+"&rd=%2F"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	lresp.Body.Close()
	if sc := setCookieHeader(lresp, "wxgate_session"); lresp.StatusCode != http.StatusSeeOther || !strings.Contains(strings.ToLower(sc), "domain=example.com") {
		t.Errorf("logout on a: %d, cookie %q", lresp.StatusCode, sc)
	}
	if b.cookieAt(auth, "wxgate_session") != "" {
		t.Error("logout on a left the shared cookie on the auth host")
	}
}

// TestHandoffFromThePublicHost: with auth_host other than the public URL's
// host, WeChat comes back to auth_host, and a login started on the public
// host is handed back to it.
func TestHandoffFromThePublicHost(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{publicURL: "http://www.example.com:{port}", serverKeys: `auth_host = "auth.example.com:{port}"`})
	www := e.origin("www.example.com")
	b := e.hostBrowser(weChatUA)
	start := b.expectRedirect(www + "/orders")
	toAuth := b.expectRedirect(start)
	if !strings.HasPrefix(toAuth, e.origin("auth.example.com")+"/_wxgate/start?") {
		t.Fatalf("start on the public host: to %q, want auth_host's start", toAuth)
	}
	authz := b.expectRedirect(toAuth)
	if !strings.Contains(authz, "redirect_uri="+url.QueryEscape(e.origin("auth.example.com")+"/_wxgate/callback")+"&") {
		t.Fatalf("authorize URL %q: the callback is not on auth_host", authz)
	}
	handoff := b.expectRedirect(b.authorize(authz, "alice", "allow"))
	if !strings.HasPrefix(handoff, www+"/_wxgate/handoff?") {
		t.Fatalf("callback: to %q, want the public host's handoff", handoff)
	}
	if final := b.expectRedirect(handoff); final != www+"/orders" {
		t.Fatalf("handoff: to %q", final)
	}
	if got := b.upstreamView(www+"/orders", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("alice").OpenID {
		t.Errorf("upstream on www: %v", got.Headers)
	}
}

// logoutFormToken returns the logout form's token on page.
func logoutFormToken(t *testing.T, b *browser, page string) string {
	t.Helper()
	_, body := b.get(page, nil)
	i := strings.Index(body, `name="token" value="`)
	if i < 0 {
		t.Fatalf("no logout token on %s: %.300s", page, body)
	}
	rest := body[i+len(`name="token" value="`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// webviewTicket asks for a web-view ticket with bearer.
func (a *api) webviewTicket(bearer string) (int, map[string]any) {
	a.e.t.Helper()
	status, m, _ := a.post("/_wxgate/miniprogram/webview-ticket", "", bearer)
	return status, m
}

// TestWebviewTicket: a mini program's web-view, where the official-account
// login is not available, gets a browser session for the same person
// through a one-time ticket.
func TestWebviewTicket(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("dora")
	access := pair["access_token"].(string)
	status, m := a.webviewTicket(access)
	ticket, _ := m["ticket"].(string)
	if status != http.StatusOK || m["expires_in"] != 30.0 || !session.ValidID(ticket) || len(m) != 2 {
		t.Fatalf("webview-ticket: %d %v", status, m)
	}
	webview := e.browser("Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
	resp, _ := webview.get("/_wxgate/handoff?ticket="+ticket+"&rd=%2Forders%3Fid%3D1", nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/orders?id=1" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("handoff in the web-view: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	dora, _ := e.sim.User(mpID, "dora")
	got := webview.upstreamView("/orders?id=1", nil)
	for name, want := range map[string]string{"X-Wechat-Openid": dora.OpenID, "X-Wechat-Unionid": dora.UnionID, "X-Wechat-Appid": mpID, "X-Wechat-Scope": "miniprogram"} {
		if first(got.Headers[name]) != want {
			t.Errorf("upstream %s = %q, want %q", name, got.Headers[name], want)
		}
	}
	// Used: another web-view gets the page, not a session.
	other := e.browser(weChatUA)
	if resp, body := other.get("/_wxgate/handoff?ticket="+ticket, nil); resp.StatusCode != http.StatusBadRequest || other.cookie("wxgate_session") != "" {
		t.Errorf("reused web-view ticket: %d %.200s", resp.StatusCode, body)
	}
	// Used, replayed by a browser logged in as someone else: refused, and
	// that browser stays who it was.
	eve := e.browser(weChatUA)
	_, m = a.webviewTicket(a.mpLogin("eve")["access_token"].(string))
	if resp, _ := eve.get("/_wxgate/handoff?ticket="+m["ticket"].(string), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("eve's handoff: %d", resp.StatusCode)
	}
	if resp, _ := eve.get("/_wxgate/handoff?ticket="+ticket, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("dora's used ticket replayed by eve: %d", resp.StatusCode)
	}
	eveMP, _ := e.sim.User(mpID, "eve")
	if got := eve.upstreamView("/orders", nil); first(got.Headers["X-Wechat-Openid"]) != eveMP.OpenID {
		t.Errorf("eve after the replay: %v", got.Headers)
	}
	// Bound to the host it was asked on.
	_, m = a.webviewTicket(access)
	onLocalhost := strings.Replace(e.url, "127.0.0.1", "localhost", 1) + "/_wxgate/handoff?ticket=" + m["ticket"].(string)
	if resp, _ := other.get(onLocalhost, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("web-view ticket on another host: %d", resp.StatusCode)
	}
	// It expires after 30 seconds (and the one refused above is still good
	// until then).
	if resp, _ := other.get("/_wxgate/handoff?ticket="+m["ticket"].(string), nil); resp.StatusCode != http.StatusFound {
		t.Errorf("ticket after a wrong-host try: %d, want it still good", resp.StatusCode)
	}
	_, m = a.webviewTicket(access)
	e.advance(session.TicketTTL)
	if resp, _ := e.browser(weChatUA).get("/_wxgate/handoff?ticket="+m["ticket"].(string), nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("expired web-view ticket: %d", resp.StatusCode)
	}
}

// TestWebviewTicketRefusals: no bearer, a bad one, a revoked family and a
// login that is not the mini program's get no ticket.
func TestWebviewTicketRefusals(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	if status, m := a.webviewTicket(""); status != http.StatusUnauthorized || m["error"] != "invalid_token" {
		t.Errorf("no bearer: %d %v", status, m)
	}
	if status, m := a.webviewTicket("not.a.token"); status != http.StatusUnauthorized || m["ticket"] != nil {
		t.Errorf("bad bearer: %d %v", status, m)
	}
	code := e.simPost("/_sim/code", map[string]string{"appid": appID, "user": "gus"})["code"]
	_, app, _ := a.post("/_wxgate/app/login", map[string]any{"code": code}, "")
	if status, m := a.webviewTicket(app["access_token"].(string)); status != http.StatusForbidden || m["error"] != "forbidden" {
		t.Errorf("app token: %d %v", status, m)
	}
	pair := a.mpLogin("dora")
	if status, _, _ := a.post("/_wxgate/token/revoke", map[string]any{"refresh_token": pair["refresh_token"]}, ""); status != http.StatusOK {
		t.Fatalf("revoke: %d", status)
	}
	if status, m := a.webviewTicket(pair["access_token"].(string)); status != http.StatusUnauthorized || m["ticket"] != nil {
		t.Errorf("revoked family: %d %v", status, m)
	}
}

// TestHandoffTicketOnceAcrossReplicas: two replicas share one Redis; a
// web-view ticket redeemed on both at once logs in exactly one browser.
func TestHandoffTicketOnceAcrossReplicas(t *testing.T) {
	c := newCluster(t, 2)
	a := c.gws[0].api()
	access := a.mpLogin("dora")["access_token"].(string)
	dora, _ := c.gws[0].sim.User(mpID, "dora")
	for round := range 5 {
		_, m := a.webviewTicket(access)
		// Both browsers ask for replica 0's host; one reaches replica 1.
		link := c.gws[0].url + "/_wxgate/handoff?ticket=" + m["ticket"].(string)
		bs := []*browser{c.gws[0].browser(weChatUA), c.gws[1].browserTo(weChatUA, strings.TrimPrefix(c.gws[1].url, "http://"), strings.TrimPrefix(c.gws[0].url, "http://"))}
		statuses := make([]int, 2)
		var wg sync.WaitGroup
		for i, b := range bs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp := b.do(http.MethodGet, link, nil, nil)
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		wg.Wait()
		won := -1
		for i, s := range statuses {
			if s == http.StatusFound {
				won = i
			} else if s != http.StatusBadRequest {
				t.Errorf("round %d: browser %d got %d", round, i, s)
			}
		}
		if won < 0 || statuses[0] == statuses[1] {
			t.Fatalf("round %d: statuses %v, want one 302 and one 400", round, statuses)
		}
		// The winner's session is the shared store's: replica 1 knows it.
		got := c.gws[1].browserToJar(bs[won], strings.TrimPrefix(c.gws[0].url, "http://")).upstreamView(c.gws[0].url+"/orders", nil)
		if first(got.Headers["X-Wechat-Openid"]) != dora.OpenID {
			t.Errorf("round %d: winner's session on replica 1: %v", round, got.Headers)
		}
	}
}

// browserToJar is b with its cookies, connecting to e for the address
// from.
func (e *env) browserToJar(b *browser, from string) *browser {
	nb := e.browserTo(b.ua, strings.TrimPrefix(e.url, "http://"), from)
	nb.c.Jar = b.c.Jar
	return nb
}

// ticketOutage is a session store whose tickets cannot be reached while
// down is set.
type ticketOutage struct {
	session.Store
	down atomic.Bool
}

func (s *ticketOutage) failing(key string) bool {
	return s.down.Load() && strings.HasPrefix(key, "ticket")
}

func (s *ticketOutage) Get(ctx context.Context, key string) ([]byte, error) {
	if s.failing(key) {
		return nil, fmt.Errorf("%w: injected", session.ErrUnavailable)
	}
	return s.Store.Get(ctx, key)
}

func (s *ticketOutage) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if s.failing(key) {
		return fmt.Errorf("%w: injected", session.ErrUnavailable)
	}
	return s.Store.Set(ctx, key, v, ttl)
}

func (s *ticketOutage) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if s.failing(key) {
		return false, fmt.Errorf("%w: injected", session.ErrUnavailable)
	}
	return s.Store.SetNX(ctx, key, v, ttl)
}

// TestHandoffStoreOutage: a store that fails answers 503 (try again),
// never a 500 or a login page, and a ticket met by the outage is still
// good afterwards.
func TestHandoffStoreOutage(t *testing.T) {
	store := &ticketOutage{Store: session.NewMemory(time.Minute)}
	e := newEnvOpts(t, envOptions{store: store})
	a := e.api()
	access := a.mpLogin("dora")["access_token"].(string)
	_, m := a.webviewTicket(access)
	store.down.Store(true)
	if status, m := a.webviewTicket(access); status != http.StatusServiceUnavailable || m["ticket"] != nil {
		t.Errorf("webview-ticket in an outage: %d %v", status, m)
	}
	b := e.browser(weChatUA)
	link := "/_wxgate/handoff?ticket=" + m["ticket"].(string)
	if resp, body := b.get(link, nil); resp.StatusCode != http.StatusServiceUnavailable || b.cookie("wxgate_session") != "" {
		t.Errorf("handoff in an outage: %d %.200s", resp.StatusCode, body)
	}
	store.down.Store(false)
	if resp, _ := b.get(link, nil); resp.StatusCode != http.StatusFound || b.cookie("wxgate_session") == "" {
		t.Errorf("handoff after the outage: %d", resp.StatusCode)
	}
}

// TestHandoffReplayedCallback: a callback of a login for a hand-off host
// replayed (Android's double redirect, a reload) restarts the login, which
// still ends with a ticket bound to the browser on that host.
func TestHandoffReplayedCallback(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{})
	a := e.origin("a.example.com")
	b := e.hostBrowser(weChatUA)
	start := b.expectRedirect(a + "/p")
	authz := b.expectRedirect(b.expectRedirect(start))
	cb := b.authorize(authz, "alice", "allow")
	if first := b.expectRedirect(cb); !strings.HasPrefix(first, a+"/_wxgate/handoff?") {
		t.Fatalf("first callback: to %q", first)
	}
	again := b.expectRedirect(cb)
	if !strings.HasPrefix(again, e.simURL) {
		t.Fatalf("replayed callback: to %q, want a restarted login", again)
	}
	handoff := b.expectRedirect(b.authorize(again, "alice", "allow"))
	if !strings.HasPrefix(handoff, a+"/_wxgate/handoff?") {
		t.Fatalf("restarted login: to %q, want a's handoff", handoff)
	}
	if final := b.expectRedirect(handoff); final != a+"/p" {
		t.Errorf("handoff of the restarted login: to %q", final)
	}
}

// TestHandoffReturnURLStaysOnHost: an absolute return URL on this host
// whose path begins with "//" is not turned into a protocol-relative
// Location, which a browser reads as another host.
func TestHandoffReturnURLStaysOnHost(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	access := a.mpLogin("dora")["access_token"].(string)
	for _, rd := range []string{e.url + "//evil.example.org/x", e.url + "///evil.example.org/x", e.url + "//evil.example.org"} {
		_, m := a.webviewTicket(access)
		b := e.browser("Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
		resp, _ := b.get("/_wxgate/handoff?ticket="+m["ticket"].(string)+"&rd="+url.QueryEscape(rd), nil)
		// A browser reads "//x" and "///x" alike: host x.
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil || loc.Host != resp.Request.URL.Host || strings.HasPrefix(resp.Header.Get("Location"), "//") {
			t.Errorf("rd %q: %d to %q, which leaves the host", rd, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

// TestHandoffForgedHbTicketUsedUp: eve starts a login on a and sends
// alice the auth host's start link carrying eve's hb. Alice's WeChat logs
// her in there, and her browser is sent to a's handoff with a ticket for
// alice bound to eve's browser: it refuses it there, and uses it up, so
// that the link alice shares afterwards (WeChat's "copy link") does not
// log eve in as alice.
func TestHandoffForgedHbTicketUsedUp(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{})
	a := e.origin("a.example.com")
	eve := e.hostBrowser(weChatUA)
	lure := eve.expectRedirect(eve.expectRedirect(a + "/orders"))
	if !strings.Contains(lure, "hb=") {
		t.Fatalf("eve's start on a: to %q, want the auth host's start with hb", lure)
	}
	alice := e.hostBrowser(weChatUA)
	handoff := alice.expectRedirect(alice.authorize(alice.expectRedirect(lure), "alice", "allow"))
	if !strings.HasPrefix(handoff, a+"/_wxgate/handoff?") {
		t.Fatalf("alice's callback: to %q, want a's handoff", handoff)
	}
	if resp, _ := alice.get(handoff, nil); resp.StatusCode != http.StatusForbidden || alice.cookieAt(a, "wxgate_session") != "" {
		t.Fatalf("alice's browser at a's handoff: %d, want 403 other_browser", resp.StatusCode)
	}
	resp, body := eve.get(handoff, nil)
	if resp.StatusCode == http.StatusFound || eve.cookieAt(a, "wxgate_session") != "" {
		t.Fatalf("eve with alice's ticket: %d %.200s; eve is logged in on a as alice", resp.StatusCode, body)
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录已过期") {
		t.Errorf("eve with alice's ticket: %d %.200s, want 400 login_expired", resp.StatusCode, body)
	}
}

// writeOutage is a session store whose writes (Set, SetNX) of keys under
// prefix fail while down is set; reads pass.
type writeOutage struct {
	session.Store
	prefix string
	down   atomic.Bool
}

func (s *writeOutage) failing(key string) bool {
	return s.down.Load() && strings.HasPrefix(key, s.prefix)
}

func (s *writeOutage) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if s.failing(key) {
		return fmt.Errorf("%w: injected", session.ErrUnavailable)
	}
	return s.Store.Set(ctx, key, v, ttl)
}

func (s *writeOutage) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if s.failing(key) {
		return false, fmt.Errorf("%w: injected", session.ErrUnavailable)
	}
	return s.Store.SetNX(ctx, key, v, ttl)
}

// TestHandoffStoreOutageMidway: a store that fails after the ticket was
// read, creating the session or marking the ticket used, answers 503 and
// leaves the ticket good: the same link logs the browser in once the store
// is back (the login is not lost), with one session (not two).
func TestHandoffStoreOutageMidway(t *testing.T) {
	for _, prefix := range []string{"sess:", "ticket-used:"} {
		t.Run(prefix, func(t *testing.T) {
			store := &writeOutage{Store: session.NewMemory(time.Minute), prefix: prefix}
			e := newEnvOpts(t, envOptions{store: store})
			a := e.api()
			_, m := a.webviewTicket(a.mpLogin("dora")["access_token"].(string))
			b := e.browser("Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
			link := "/_wxgate/handoff?ticket=" + m["ticket"].(string) + "&rd=%2Forders"
			store.down.Store(true)
			if resp, body := b.get(link, nil); resp.StatusCode != http.StatusServiceUnavailable || b.cookie("wxgate_session") != "" {
				t.Fatalf("handoff in an outage: %d %.200s", resp.StatusCode, body)
			}
			store.down.Store(false)
			if resp, body := b.get(link, nil); resp.StatusCode != http.StatusFound || b.cookie("wxgate_session") == "" {
				t.Fatalf("the same link after the outage: %d %.200s; the login is lost", resp.StatusCode, body)
			}
			dora, _ := e.sim.User(mpID, "dora")
			status, list := e.adminDo(http.MethodGet, "/sessions?openid="+dora.OpenID)
			sessions := 0
			for _, l := range list["logins"].([]any) {
				if l.(map[string]any)["kind"] == "session" {
					sessions++
				}
			}
			if status != http.StatusOK || sessions != 1 {
				t.Errorf("dora's browser sessions: %d, %d of them; want 1", status, sessions)
			}
		})
	}
}

// TestWebviewTicketFromAnotherSite: a web-view ticket checks no binding,
// so eve's own ticket, minted by her server when bob visits her page and
// sent on by a redirect or a link there, would log bob's browser in as eve
// (login CSRF: what bob then saves is eve's) and end bob's session. The
// browser says where such a navigation comes from (Sec-Fetch-Site, which a
// page cannot set): from another site, the ticket is refused and bob stays
// bob; the mini program's web-view opening it ("none") gets the session.
func TestWebviewTicketFromAnotherSite(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	eveToken := a.mpLogin("eve")["access_token"].(string)
	bob := e.browser(weChatUA)
	bob.login("/", "bob")
	for _, site := range []string{"cross-site", "same-site", "CROSS-SITE"} {
		_, m := a.webviewTicket(eveToken)
		resp, body := bob.get("/_wxgate/handoff?ticket="+m["ticket"].(string)+"&rd=%2Forders", map[string]string{"Sec-Fetch-Site": site})
		if resp.StatusCode != http.StatusForbidden || setCookieHeader(resp, "wxgate_session") != "" {
			t.Errorf("eve's web-view ticket in bob's browser, Sec-Fetch-Site %s: %d %.200s", site, resp.StatusCode, body)
		}
		if got := bob.upstreamView("/orders", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("bob").OpenID {
			t.Fatalf("bob after eve's ticket (%s): %v", site, got.Headers)
		}
	}
	webview := e.browser("Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
	for _, site := range []string{"none", "same-origin"} {
		_, m := a.webviewTicket(eveToken)
		resp, body := webview.get("/_wxgate/handoff?ticket="+m["ticket"].(string)+"&rd=%2Forders", map[string]string{"Sec-Fetch-Site": site})
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/orders" {
			t.Errorf("web-view ticket, Sec-Fetch-Site %s: %d %.200s", site, resp.StatusCode, body)
		}
	}
}

// TestSharedCookieDomainLeavesOtherHostsHostOnly: on https, [session]
// cookie_domain names the session cookie __Secure- (a Domain is allowed)
// on the hosts it covers. A host it does not cover keeps __Host-: a
// __Secure- cookie there could be set by any sibling host for their
// common parent (cookie tossing), logging the browser in as whoever set
// it, which __Host- forbids.
func TestSharedCookieDomainLeavesOtherHostsHostOnly(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{publicURL: "https://auth.example.com:{port}", sessionKeys: `cookie_domain = ".example.com"`})
	a := e.api()
	eveToken := a.mpLogin("eve")["access_token"].(string)
	b := e.hostBrowser("Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
	// handoff on host, with a web-view ticket asked there; returns the
	// answer's session cookie line and value.
	handoff := func(host string) (string, string) {
		t.Helper()
		resp := b.do(http.MethodPost, e.origin(host)+"/_wxgate/miniprogram/webview-ticket", nil, map[string]string{"Authorization": "Bearer " + eveToken})
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		ticket, _ := m["ticket"].(string)
		if resp.StatusCode != http.StatusOK || ticket == "" {
			t.Fatalf("web-view ticket on %s: %d %v", host, resp.StatusCode, m)
		}
		resp = b.do(http.MethodGet, e.origin(host)+"/_wxgate/handoff?ticket="+ticket, nil, nil)
		resp.Body.Close()
		for _, v := range resp.Header.Values("Set-Cookie") {
			if name, rest, _ := strings.Cut(v, "="); strings.HasSuffix(name, "wxgate_session") {
				value, _, _ := strings.Cut(rest, ";")
				return v, value
			}
		}
		t.Fatalf("handoff on %s: %d, no session cookie", host, resp.StatusCode)
		return "", ""
	}
	line, _ := handoff("a.example.com")
	if !strings.HasPrefix(line, "__Secure-wxgate_session=") || !strings.Contains(strings.ToLower(line), "domain=example.com") {
		t.Errorf("on a.example.com (covered): %q, want __Secure- with Domain=example.com", line)
	}
	line, eveID := handoff("b.multi.example")
	if !strings.HasPrefix(line, "__Host-wxgate_session=") || strings.Contains(strings.ToLower(line), "domain=") {
		t.Errorf("on b.multi.example (not covered): %q, want a host-only __Host- cookie", line)
	}
	// Eve's session ID tossed from evil.multi.example as a __Secure- cookie
	// for multi.example: b.multi.example does not take it.
	resp, body := b.get(e.origin("b.multi.example")+"/orders", map[string]string{"Cookie": "__Secure-wxgate_session=" + eveID})
	eve, _ := e.sim.User(mpID, "eve")
	if resp.StatusCode == http.StatusOK && strings.Contains(body, eve.OpenID) {
		t.Errorf("a tossed __Secure- cookie logged b.multi.example in as eve")
	}
}

// TestHandoffQRLogin: a desktop login that starts on a hand-off host scans
// the website app's QR on the auth host and is handed back like the
// official account's. The QR page kept no hand-off binding before, so the
// login ended on the auth host and the page on a started it again.
func TestHandoffQRLogin(t *testing.T) {
	e := newMultiHostEnv(t, envOptions{website: true})
	a, auth := e.origin("a.example.com"), e.origin("auth.example.com")
	b := e.hostBrowser(desktopUA)
	toAuth := b.expectRedirect(b.expectRedirect(a + "/orders?id=7"))
	hb := mustQuery(t, toAuth, "hb")
	qr := b.expectRedirect(toAuth)
	if !strings.HasPrefix(qr, auth+"/_wxgate/qr?") || mustQuery(t, qr, "hb") != hb {
		t.Fatalf("auth's start sent the desktop browser to %q, want auth's QR page keeping hb=%s", qr, hb)
	}
	p := b.qrPage(qr)
	handoff := b.expectRedirect(b.authorize(p.fallback, "alice", "allow"))
	if !strings.HasPrefix(handoff, a+"/_wxgate/handoff?") {
		t.Fatalf("QR callback: Location %q, want a's handoff", handoff)
	}
	if final := b.expectRedirect(handoff); final != a+"/orders?id=7" {
		t.Fatalf("handoff: Location %q, want a's /orders?id=7", final)
	}
	alice := webUser(e, "alice")
	got := b.upstreamView(a+"/orders?id=7", nil)
	if first(got.Headers["X-Wechat-Openid"]) != alice.OpenID || first(got.Headers["X-Wechat-Scope"]) != "snsapi_login" {
		t.Errorf("on a the upstream sees %v, want alice's website openid with snsapi_login", got.Headers)
	}

	// The QR page asked on a hand-off host starts where /start would.
	if loc := e.hostBrowser(desktopUA).expectRedirect(a + "/_wxgate/qr?rd=%2Fx"); !strings.HasPrefix(loc, auth+"/_wxgate/start?") || mustQuery(t, loc, "hb") == "" {
		t.Errorf("GET /_wxgate/qr on a: Location %q, want auth's start with hb", loc)
	}
}
