package proxy

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/internal/qrimg"
	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// refreshTokenLife is how long WeChat's sns refresh_token lives
// (WECHAT-API.md section 3).
const refreshTokenLife = 30 * 24 * time.Hour

// client kinds by User-Agent (WECHAT-API.md section 7).
type uaKind int

const (
	uaDesktop uaKind = iota // a desktop browser outside WeChat
	uaPhone                 // a phone or tablet browser outside WeChat
	uaWeChat                // WeChat's in-app browser (phone or PC)
	uaWeCom                 // WeCom: has its own OAuth, not this flow
	// A mini program's web-view: no official-account login there; the
	// mini program hands its user in with a web-view ticket.
	uaMiniProgram
)

// phoneMarkers are what phone and tablet browsers put in their User-Agent
// and desktop ones do not. A QR code shown on such a screen cannot be
// scanned by the phone showing it.
var phoneMarkers = []string{"Android", "iPhone", "iPad", "iPod", "Mobile", "HarmonyOS"}

func classifyUA(ua string) uaKind {
	switch {
	case strings.Contains(ua, "wxwork/"):
		return uaWeCom
	case strings.Contains(ua, "MicroMessenger/") && strings.Contains(ua, "miniProgram"):
		return uaMiniProgram
	case strings.Contains(ua, "MicroMessenger/"):
		return uaWeChat
	}
	for _, m := range phoneMarkers {
		if strings.Contains(ua, m) {
			return uaPhone
		}
	}
	return uaDesktop
}

// maxReturnURL bounds a login's return URL: it is kept with the pending
// login, which a flood of starts multiplies.
const maxReturnURL = 2 << 10

// returnURL is the request's rd, validated (safeRedirect) and bounded as
// it is kept: an absolute rd comes back escaped, up to three times longer.
func (s *Server) returnURL(c *fiber.Ctx) (string, error) {
	raw := c.Query("rd")
	if len(raw) > maxReturnURL {
		return "", invalidRequest(fmt.Errorf("rd: %d bytes, over the %d-byte limit", len(raw), maxReturnURL))
	}
	rd := s.safeRedirect(raw)
	if len(rd) > maxReturnURL {
		return "", invalidRequest(fmt.Errorf("rd: %d bytes once escaped, over the %d-byte limit", len(rd), maxReturnURL))
	}
	return rd, nil
}

// start begins a browser login: GET /_wxgate/start?rd=&scope=base|userinfo.
// The flow follows the browser: the official account's inside WeChat, the
// website app's QR page on a desktop, else a page that says to open the
// link in WeChat.
func (s *Server) start(c *fiber.Ctx) error {
	rd, err := s.returnURL(c)
	if err != nil {
		return err
	}
	if done, err := s.startElsewhere(c, rd); done {
		return err
	}
	scope := authorizeScope(c.Query("scope"))
	kind := classifyUA(c.Get(fiber.HeaderUserAgent))
	// Only `wxgate dev` lets a desktop browser run the in-WeChat flow, so the
	// dance can be watched against the simulator.
	if s.cfg.Server.Dev && c.Query("flow") == "oa" {
		kind = uaWeChat
	}
	switch {
	case kind == uaWeChat && s.oa.AppID != "":
		return s.beginOA(c, rd, scope, 0)
	case kind == uaDesktop && s.website.AppID != "":
		noStore(c)
		return c.Redirect(s.qrPath(rd, scope, s.handoffBinding(c), false), http.StatusFound)
	}
	return s.openInWeChat(c, kind, rd, scope)
}

// qrPath is the QR login page's URL for rd. hb is the hand-off binding the
// login keeps (empty: none). retry marks the one automatic restart after a
// bad code.
func (s *Server) qrPath(rd, scope, hb string, retry bool) string {
	q := url.Values{"rd": {rd}}
	if hb != "" {
		q.Set("hb", hb)
	}
	if scope == scopeUserinfo {
		// Only the dev link asks for it: a QR login carries the profile.
		q.Set("scope", routeUserinfo)
	}
	if retry {
		q.Set("retry", "1")
	}
	return s.prefix + "/qr?" + q.Encode()
}

// qr is the desktop QR login page: GET /_wxgate/qr?rd=. It shows WeChat's
// QR code for the website app, framed the way wxLogin.js frames it; any
// other browser, or a gateway without a website app, goes to the flow
// /start picks for it.
func (s *Server) qr(c *fiber.Ctx) error {
	rd, err := s.returnURL(c)
	if err != nil {
		return err
	}
	// Off auth_host, or for another host's page, the login starts where
	// /start would start it: the callback's binding cookie is auth_host's.
	if done, err := s.startElsewhere(c, rd); done {
		return err
	}
	scope := authorizeScope(c.Query("scope"))
	if classifyUA(c.Get(fiber.HeaderUserAgent)) != uaDesktop || s.website.AppID == "" {
		noStore(c)
		q := url.Values{"rd": {rd}, "scope": {routeScope(scope)}}
		return c.Redirect(s.prefix+"/start?"+q.Encode(), http.StatusFound)
	}
	attempt := 0
	if c.Query("retry") == "1" {
		// Set only by restart; a client that sets it itself just gets the
		// error page instead of a new QR code after its next bad code.
		attempt = 1
	}
	return s.beginQR(c, rd, scope, attempt)
}

// beginQR stores a pending login of the QR flow and shows WeChat's QR page
// in a frame, with a link to the whole page for when framing fails.
// Beyond the pending-login bounds it answers 429 and stores nothing, so
// reloading the page cannot pile up logins either.
func (s *Server) beginQR(c *fiber.Ctx, rd, scope string, attempt int) error {
	state, err := s.newPending(c, rd, scopeLogin, "qr", attempt)
	if err != nil {
		return pendingError(c, err)
	}
	d := s.page(c, "qr_login")
	d.Frame = s.wechat.QRConnectFrameURL(s.website.AppID, s.callbackURL(), state)
	d.FrameTitle = label(c, "qr_frame")
	d.Links = append(d.Links, pageLink{URL: s.wechat.QRConnectURL(s.website.AppID, s.callbackURL(), state), Label: label(c, "qr_fallback")})
	s.devLink(c, &d, rd, scope)
	return s.render(c, d)
}

// openInWeChat shows the "open this page in WeChat" page: the page's link
// with a copy button, and on a desktop a QR code of it for the phone's
// WeChat to scan.
func (s *Server) openInWeChat(c *fiber.Ctx, kind uaKind, rd, scope string) error {
	page := "open_in_wechat"
	switch kind {
	case uaWeCom:
		page = "wecom"
	case uaPhone:
		page = "open_in_wechat_phone"
	case uaMiniProgram:
		page = "miniprogram_webview"
	}
	d := s.page(c, page)
	s.withLink(c, &d, s.absoluteURL(rd))
	if kind == uaDesktop {
		// A link too long for a code still shows, without one.
		if qr, err := qrimg.DataURI(d.Link, 240); err == nil {
			d.QR, d.QRAlt = template.URL(qr), label(c, "qr_alt")
		}
	}
	s.devLink(c, &d, rd, scope)
	return s.render(c, d)
}

// devLink adds, in `wxgate dev` only, the link that runs the in-WeChat
// login in this browser against the simulator.
func (s *Server) devLink(c *fiber.Ctx, d *pageData, rd, scope string) {
	if s.cfg.Server.Dev && s.oa.AppID != "" {
		q := url.Values{"rd": {rd}, "scope": {routeScope(scope)}, "flow": {"oa"}}
		d.Links = append(d.Links, pageLink{URL: s.prefix + "/start?" + q.Encode(), Label: label(c, "dev"), Primary: true})
	}
}

// absoluteURL is the URL a browser would show for rd, a return target as
// safeRedirect gives it: a path on the public URL's origin, or an absolute
// URL of an allowed host as it is.
func (s *Server) absoluteURL(rd string) string {
	if strings.HasPrefix(rd, "/") {
		return strings.TrimSuffix(s.public.String(), "/") + rd
	}
	return rd
}

// errHeadOnly is newPending's answer to a HEAD request: the page exists,
// and no login starts.
var errHeadOnly = errors.New("proxy: a HEAD request starts no login")

// pendingError answers a request newPending refused.
func pendingError(c *fiber.Ctx, err error) error {
	if errors.Is(err, errHeadOnly) {
		noStore(c)
		return c.SendStatus(http.StatusOK)
	}
	return err
}

// newPending stores a pending login of flow and returns its state, bound
// to the browser's binding cookie (a new one unless it has a valid one).
// Beyond the pending-login bounds it answers 429, and to what the browser
// says is no navigation (Sec-Fetch-Dest) 403; either stores nothing.
func (s *Server) newPending(c *fiber.Ctx, rd, scope, flow string, attempt int) (string, error) {
	if dest := c.Get("Sec-Fetch-Dest"); dest != "" && dest != "document" {
		// A login is a page the person navigates to; an image, frame or
		// fetch of another page (which no one sees: frame-ancestors) would
		// spend the visitor's address's share of the bounds.
		return "", forbidden(fmt.Errorf("login started by a request for a %q, not a page", dest))
	}
	if c.Method() == http.MethodHead {
		// A link checker or preview asking about the page: nothing to
		// log in, and nothing stored against the client's bounds.
		return "", errHeadOnly
	}
	if ok, why := s.starts.allow(requestOf(c).client); !ok {
		s.metrics.StartRefused(why)
		return "", tooManyLogins(fmt.Errorf("pending logins over the %s bound", why))
	}
	binding := s.bindingCookie(c)
	state := session.NewState()
	err := s.sessions.SavePending(c.UserContext(), state, &session.Pending{
		ReturnURL: rd, Scope: scope, Flow: flow, Binding: session.Hash(binding), Attempt: attempt,
		Handoff: s.handoffBinding(c),
	})
	if err != nil {
		return "", storeError(err)
	}
	s.setCookie(c, s.cookies.binding, binding, session.PendingTTL)
	return state, nil
}

// beginOA stores a pending login and redirects to WeChat's authorize page.
// Beyond the pending-login bounds it answers 429 and stores nothing.
func (s *Server) beginOA(c *fiber.Ctx, rd, scope string, attempt int) error {
	state, err := s.newPending(c, rd, scope, "oa", attempt)
	if err != nil {
		return pendingError(c, err)
	}
	noStore(c)
	return c.Redirect(s.wechat.AuthorizeURL(s.oa.AppID, s.callbackURL(), scope, state), http.StatusFound)
}

// callbackURL is on [server] auth_host: the official account's one
// authorization domain.
func (s *Server) callbackURL() string {
	return s.public.Scheme + "://" + s.cfg.Server.authAuthority + s.prefix + "/callback"
}

// callback completes a browser login, of the official account or the QR
// flow: GET /_wxgate/callback. The pending login's flow decides which app
// redeems the code, so a code of one app presented on the other's state
// is WeChat's 40029, never a login.
func (s *Server) callback(c *fiber.Ctx) error {
	ctx := c.UserContext()
	state, code := c.Query("state"), c.Query("code")
	retry := s.prefix + "/start"
	// Until the state names its login, the flow is unknown: counted as oa.
	if !session.ValidState(state) {
		s.loginFailed(c, "oa", "bad_state")
		return loginExpired(retry)
	}
	p, err := s.sessions.Pending(ctx, state)
	if isNotFound(err) {
		s.loginFailed(c, "oa", "bad_state")
		return loginExpired(retry)
	} else if err != nil {
		return storeError(err)
	}
	flow := p.Flow
	// The retry asks for the scope this login asked for: a refused
	// consent tried again is the same consent.
	retry = s.prefix + "/start?" + url.Values{"rd": {p.ReturnURL}, "scope": {routeScope(p.Scope)}}.Encode()
	// The state must come back to the browser that started it, checked
	// before the code is touched: a state or code carried to another browser
	// logs nobody in there.
	if !p.BoundTo(c.Cookies(s.cookies.binding)) {
		s.loginFailed(c, flow, "other_browser")
		return otherBrowser(retry)
	}
	keepHandoff(c, p)
	// A second callback (Android double redirect, refresh, back button)
	// lands on the first one's outcome.
	if done, err := s.remembered(c, state); err != nil || done {
		return err
	}
	app := s.flowApp(flow)
	if app.AppID == "" {
		// Started before a restart that removed the flow's app.
		s.loginFailed(c, flow, "bad_state")
		return loginExpired(retry)
	}
	if code == "" {
		// The official account's refusal; WeChat's QR page redirects
		// nowhere on one, but a callback without a code means the same.
		s.loginFailed(c, flow, "refused")
		return refused(retry)
	}
	first, err := s.sessions.Claim(ctx, state)
	if err != nil {
		return storeError(err)
	}
	if !first {
		// Used by a concurrent or earlier callback that left no result.
		return s.restart(c, p, "replayed")
	}
	tok, err := s.wechat.ExchangeCode(ctx, app, code)
	switch {
	case wechat.HasCode(err, wechat.CodeInvalidCode, wechat.CodeCodeUsed, 42003):
		return s.restart(c, p, "code_invalid")
	case err != nil:
		s.loginFailed(c, flow, "wechat_error")
		return err
	}
	if tok.IsSnapshotUser == 1 {
		// A snapshot page gives a virtual identity: ask for a real
		// authorization and never treat it as logged in.
		s.loginFailed(c, flow, "snapshot")
		d := s.page(c, "snapshot")
		q := url.Values{"rd": {p.ReturnURL}, "scope": {routeUserinfo}}
		d.Links = []pageLink{{URL: s.prefix + "/start?" + q.Encode(), Label: label(c, "authorize"), Primary: true}}
		c.Status(http.StatusForbidden)
		return s.render(c, d)
	}
	id := session.Identity{OpenID: tok.OpenID, UnionID: tok.UnionID, AppID: app.AppID, Scope: scopeBase}
	switch {
	case flow == "qr":
		// snsapi_login carries the profile, as snsapi_userinfo does.
		id.Scope = scopeLogin
	case grantsUserinfo(tok.Scope):
		id.Scope = scopeUserinfo
	}
	if id.Scope != scopeBase {
		info, err := s.wechat.UserInfo(ctx, tok.AccessToken, tok.OpenID, wechatLang(c))
		if err != nil {
			s.loginFailed(c, flow, "wechat_error")
			return err
		}
		id.Nickname, id.Avatar = info.Nickname, info.HeadImgURL
		if id.UnionID == "" {
			id.UnionID = info.UnionID
		}
	}
	tokens := userTokens(tok, s.sessions.Now())
	if done, err := s.handOffLogin(c, p, id, tokens); done {
		return err
	}
	sess, err := s.replaceSession(c, id, tokens)
	if err != nil {
		return storeError(err)
	}
	if err := s.sessions.SaveResult(ctx, state, &session.Result{SessionHash: session.Hash(sess.ID), ReturnURL: p.ReturnURL}); err != nil {
		return storeError(err)
	}
	s.setCookie(c, s.sessionCookie(c), sess.ID, s.cfg.Session.TTL)
	s.starts.release(requestOf(c).client)
	s.metrics.LoggedIn(flow, id.UnionID != "")
	s.loginEvent(c, flow, &id, id.AppID, id.Scope, "ok")
	noStore(c)
	return c.Redirect(p.ReturnURL, http.StatusFound)
}

// replaceSession creates the session of a login, ending the one the
// browser had here first: a login replaces it (escalation, or a different
// user) under a new ID. err is the store's.
func (s *Server) replaceSession(c *fiber.Ctx, id session.Identity, tokens *session.Tokens) (*session.Session, error) {
	ctx := c.UserContext()
	if old := c.Cookies(s.sessionCookie(c)); session.ValidID(old) {
		if err := s.sessions.Delete(ctx, old); err != nil {
			return nil, err
		}
	}
	return s.sessions.Create(ctx, id, tokens)
}

// flowApp is the app that redeems the codes of a pending login's flow; its
// AppID is empty when that app is not configured.
func (s *Server) flowApp(flow string) wechat.App {
	if flow == "qr" {
		return s.website
	}
	return s.oa
}

// userTokens is what a session keeps of WeChat's user token; now is the
// gateway's clock.
func userTokens(tok *wechat.UserToken, now time.Time) *session.Tokens {
	return &session.Tokens{
		AccessToken:      tok.AccessToken,
		ExpiresAt:        now.Add(time.Duration(tok.ExpiresIn) * time.Second),
		RefreshToken:     tok.RefreshToken,
		RefreshExpiresAt: now.Add(refreshTokenLife),
	}
}

// remembered continues to the return URL when state's callback already
// logged this browser in, and reports whether it answered.
func (s *Server) remembered(c *fiber.Ctx, state string) (bool, error) {
	r, err := s.sessions.Result(c.UserContext(), state)
	if isNotFound(err) {
		return false, nil
	} else if err != nil {
		return true, storeError(err)
	}
	cur := c.Cookies(s.sessionCookie(c))
	if session.ValidID(cur) && session.Hash(cur) == r.SessionHash {
		if _, err := s.sessions.Get(c.UserContext(), cur); err == nil {
			noStore(c)
			return true, c.Redirect(r.ReturnURL, http.StatusFound)
		}
	}
	return false, nil
}

// restart begins the login again once after a bad or reused code, then
// gives up with an error page. The QR flow restarts on a new QR page: a
// person scans again, so it cannot loop by itself either way.
func (s *Server) restart(c *fiber.Ctx, p *session.Pending, why string) error {
	if p.Attempt >= 1 {
		s.loginFailed(c, p.Flow, why)
		return codeInvalid(s.prefix + "/start?" + url.Values{"rd": {p.ReturnURL}, "scope": {routeScope(p.Scope)}}.Encode())
	}
	s.loginFailed(c, p.Flow, "restarted")
	if p.Flow == "qr" {
		noStore(c)
		return c.Redirect(s.qrPath(p.ReturnURL, "", p.Handoff, true), http.StatusFound)
	}
	return s.beginOA(c, p.ReturnURL, p.Scope, p.Attempt+1)
}

// wechatLang maps the page language to /sns/userinfo's lang.
func wechatLang(c *fiber.Ctx) string {
	if lang(c) == "en" {
		return "en"
	}
	return "zh_CN"
}

// setCookie sets one of wxgate's cookies: HttpOnly, SameSite=Lax, Path=/,
// Secure (and __Host-) on https; the session cookie takes [session]
// cookie_domain on the hosts it covers (and __Secure- then).
func (s *Server) setCookie(c *fiber.Ctx, name, value string, ttl time.Duration) {
	c.Cookie(&fiber.Cookie{
		Name: name, Value: value, Path: "/", Domain: s.sessionCookieDomain(c, name), MaxAge: int(ttl / time.Second),
		HTTPOnly: true, Secure: s.cookies.secure, SameSite: fiber.CookieSameSiteLaxMode,
	})
}

// bindingCookie is the browser's binding cookie, or a new one when it has
// no valid one. Copied: it outlives the handler (a pending login's
// binding, the cookie set again).
func (s *Server) bindingCookie(c *fiber.Ctx) string {
	if b := c.Cookies(s.cookies.binding); session.ValidID(b) {
		return strings.Clone(b)
	}
	return session.NewID()
}

func (s *Server) clearCookie(c *fiber.Ctx, name string) {
	c.Cookie(&fiber.Cookie{
		Name: name, Value: "", Path: "/", Domain: s.sessionCookieDomain(c, name), MaxAge: -1, Expires: time.Unix(1, 0),
		HTTPOnly: true, Secure: s.cookies.secure, SameSite: fiber.CookieSameSiteLaxMode,
	})
}

// logoutPage asks for confirmation: a GET must not end a session (link
// prefetchers and cross-site images would). The form carries the logout
// token, for browsers that send no Origin.
func (s *Server) logoutPage(c *fiber.Ctx) error {
	d := s.page(c, "logout_confirm")
	hidden := map[string]string{"rd": s.safeRedirect(c.Query("rd"))}
	if id := c.Cookies(s.sessionCookie(c)); session.ValidID(id) {
		hidden["token"] = logoutToken(id)
	}
	d.Form = &pageForm{Action: s.prefix + "/logout", Label: label(c, "logout"), Hidden: hidden}
	d.Links = append(d.Links, pageLink{URL: hidden["rd"], Label: label(c, "cancel")})
	return s.render(c, d)
}

// logoutToken is the token the logout form carries: derived from the
// session ID, which a cross-site page cannot read, so it cannot forge it.
func logoutToken(id string) string { return session.Hash("wxgate logout\x00" + id) }

// logout ends the session server side: POST /_wxgate/logout. A cross-site
// form must not log anyone out, so the request must come from this origin
// (Origin, which browsers send on every POST) or, without Origin, carry
// the logout form's token.
func (s *Server) logout(c *fiber.Ctx) error {
	// A browser's form: errors are pages, unless the client asks for JSON.
	body, err := readRawBody(c)
	if err != nil {
		return invalidRequest(err)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return invalidRequest(fmt.Errorf("logout form: %w", err))
	}
	rd := s.safeRedirect(form.Get("rd"))
	if id := c.Cookies(s.sessionCookie(c)); session.ValidID(id) {
		if !s.fromOwnOrigin(c, form.Get("token"), id) {
			return forbidden(errors.New("logout from another origin or without the form's token"))
		}
		// Read first so that the log line names who logged out; a session
		// already gone is still a logout of this browser, and one that
		// cannot be read (a record that does not decode) must still end:
		// the line then names no one.
		var who *session.Identity
		if sess, err := s.sessions.Get(c.UserContext(), id); err == nil {
			who = &sess.Identity
		}
		if err := s.sessions.Delete(c.UserContext(), id); err != nil {
			return storeError(err)
		}
		s.authEvent(c, slog.LevelInfo, "logout", who)
	}
	s.clearCookie(c, s.sessionCookie(c))
	noStore(c)
	return c.Redirect(rd, http.StatusSeeOther)
}

// userinfo answers the current identity as JSON: GET /_wxgate/userinfo.
func (s *Server) userinfo(c *fiber.Ctx) error {
	who, authErr, err := s.currentCaller(c, requestOf(c))
	switch {
	case err != nil:
		return err
	case authErr != nil:
		return authErr
	case who == nil:
		return loginRequired(s.prefix + "/start").asJSON()
	}
	id := who.id
	noStore(c)
	return c.JSON(fiber.Map{
		"openid": id.OpenID, "unionid": id.UnionID, "appid": id.AppID, "scope": id.Scope,
		"nickname": id.Nickname, "avatar": id.Avatar, "user": id.User(),
	})
}

// fromOwnOrigin reports whether a state-changing request comes from a page
// of this gateway: its Origin is the public URL's or the request's own, or,
// when the browser sent no Origin (or "null"), token is the session's
// logout token.
func (s *Server) fromOwnOrigin(c *fiber.Ctx, token, sessionID string) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" || origin == "null" {
		return hmac.Equal([]byte(token), []byte(logoutToken(sessionID)))
	}
	return s.ownOrigin(c, origin)
}

// ownOrigin reports whether origin (an Origin header) is the public URL's
// or the request's own.
func (s *Server) ownOrigin(c *fiber.Ctx, origin string) bool {
	scheme, hostport, ok := strings.Cut(origin, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return false
	}
	_, authority, err := parseHost(hostport)
	if err != nil {
		return false
	}
	authority = withoutDefaultPort(scheme, authority)
	if scheme == s.public.Scheme && authority == s.publicAuthority {
		return true
	}
	r := requestOf(c)
	return scheme == r.scheme && authority == withoutDefaultPort(r.scheme, r.authority)
}
