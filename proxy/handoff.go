package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/session"
)

// Many hosts, one callback domain (DESIGN.md): an official account has one
// authorization domain, [server] auth_host. A login started on another
// host this gateway serves ([server] handoff_hosts, or the public URL's
// host when it is not auth_host) goes through auth_host's /start, carrying
// the hash of that host's binding cookie (hb); the callback there issues a
// one-time ticket bound to the host and that cookie, and /handoff on the
// host turns it into a new session. A mini program gets a ticket for its
// web-view from /miniprogram/webview-ticket. With [session] cookie_domain
// covering both hosts the session cookie set on auth_host already reaches
// the host: no ticket.

// handoffKey holds, during a callback, the hand-off binding of its
// pending login, for a restarted login to keep.
const handoffKey ctxKey = 1

// here is the authority the request came to, normalized as the configured
// authorities are: lowercase, without the public scheme's default port.
func (s *Server) here(c *fiber.Ctx) string {
	return withoutDefaultPort(s.public.Scheme, requestOf(c).authority)
}

// listed reports whether host (lowercase, no port) on port (":8443", or
// "" for the scheme's default) matches an entry of list: exact, or
// ".example.com" for its subdomains, with ":port" when not the default.
func listed(list []string, host, port string) bool {
	for _, h := range list {
		h = strings.ToLower(h)
		want, wantPort, _ := strings.Cut(h, ":")
		if wantPort != "" {
			wantPort = ":" + wantPort
		}
		if port != wantPort {
			continue
		}
		if strings.HasPrefix(want, ".") {
			if strings.HasSuffix(host, want) && len(host) > len(want) {
				return true
			}
		} else if host == want {
			return true
		}
	}
	return false
}

// splitAuthority splits a normalized authority into its host and its port
// part (":8443" or "").
func splitAuthority(authority string) (host, port string) {
	host, _, err := parseHost(authority)
	if err != nil {
		return "", ""
	}
	return host, strings.TrimPrefix(authority, host)
}

// handoffHost reports whether authority is a host whose logins go through
// auth_host: the public URL's, or one of handoff_hosts, and not auth_host
// itself.
func (s *Server) handoffHost(authority string) bool {
	if authority == s.cfg.Server.authAuthority {
		return false
	}
	if authority == s.publicAuthority {
		return true
	}
	host, port := splitAuthority(authority)
	return host != "" && listed(s.cfg.Server.HandoffHosts, host, port)
}

// cookieDomain is [session] cookie_domain without its leading dot,
// lowercase; empty when unset.
func (s *Server) cookieDomain() string {
	return strings.ToLower(strings.TrimPrefix(s.cfg.Session.CookieDomain, "."))
}

// coveredBy reports whether a cookie with Domain=domain reaches host.
func coveredBy(domain, host string) bool {
	return domain != "" && (host == domain || strings.HasSuffix(host, "."+domain))
}

// sharesCookie reports whether the session cookie auth_host sets reaches
// authority too: then a login needs no ticket to get there.
func (s *Server) sharesCookie(authority string) bool {
	d := s.cookieDomain()
	host, _ := splitAuthority(authority)
	authHost, _ := splitAuthority(s.cfg.Server.authAuthority)
	return coveredBy(d, host) && coveredBy(d, authHost)
}

// sessionCookie is the name of the session cookie on this request's host:
// the shared one on a host cookie_domain covers.
func (s *Server) sessionCookie(c *fiber.Ctx) string {
	if s.cookies.shared != "" && coveredBy(s.cookieDomain(), requestOf(c).host) {
		return s.cookies.shared
	}
	return s.cookies.session
}

// sessionCookieDomain is the Domain attribute of cookie name set on this
// request: cookie_domain for the session cookie on a host it covers, else
// none (host-only).
func (s *Server) sessionCookieDomain(c *fiber.Ctx, name string) string {
	d := s.cookieDomain()
	if name != s.cookies.shared || !coveredBy(d, requestOf(c).host) {
		return ""
	}
	return d
}

// ticketHost returns the authority of rd, a return URL as safeRedirect
// gives it, when a login returning there needs a ticket: rd is absolute on
// a hand-off host the session cookie of auth_host does not reach.
func (s *Server) ticketHost(rd string) (string, bool) {
	if strings.HasPrefix(rd, "/") {
		return "", false
	}
	u, err := url.Parse(rd)
	if err != nil || u.Scheme != s.public.Scheme {
		return "", false
	}
	_, authority, err := parseHost(u.Host)
	if err != nil {
		return "", false
	}
	authority = withoutDefaultPort(u.Scheme, authority)
	if !s.handoffHost(authority) || s.sharesCookie(authority) {
		return "", false
	}
	return authority, true
}

// startElsewhere sends a login to the host where it must start, and
// reports whether it answered: from a hand-off host to auth_host (rd made
// absolute on the host, hb the hash of the host's binding cookie, set
// here), and to the hand-off host a return URL names when this start is
// not on it and carries no hb for it. The rest of the query goes along.
func (s *Server) startElsewhere(c *fiber.Ctx, rd string) (bool, error) {
	here := s.here(c)
	onAuth := here == s.cfg.Server.authAuthority
	if target, ok := s.ticketHost(rd); ok && target != here && !(onAuth && session.ValidID(c.Query("hb"))) {
		return true, s.redirectStart(c, s.public.Scheme+"://"+target, rd, "")
	}
	if onAuth || !s.handoffHost(here) {
		return false, nil
	}
	if strings.HasPrefix(rd, "/") {
		rd = s.public.Scheme + "://" + requestOf(c).authority + rd
	}
	binding := s.bindingCookie(c)
	s.setCookie(c, s.cookies.binding, binding, session.PendingTTL)
	return true, s.redirectStart(c, s.public.Scheme+"://"+s.cfg.Server.authAuthority, rd, session.Hash(binding))
}

// redirectStart redirects to origin's /start with this request's query,
// rd replaced and hb set (or dropped).
func (s *Server) redirectStart(c *fiber.Ctx, origin, rd, hb string) error {
	q := url.Values{}
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		q.Add(string(k), string(v))
	})
	q.Set("rd", rd)
	q.Del("hb")
	if hb != "" {
		q.Set("hb", hb)
	}
	noStore(c)
	return c.Redirect(origin+s.prefix+"/start?"+q.Encode(), http.StatusFound)
}

// handoffBinding is the hand-off binding a pending login started by this
// request keeps: hb from the query on auth_host's /start, or, in a
// callback restarting its login, the pending login's.
func (s *Server) handoffBinding(c *fiber.Ctx) string {
	if hb := c.Query("hb"); session.ValidID(hb) {
		return strings.Clone(hb)
	}
	hb, _ := c.Locals(handoffKey).(string)
	return hb
}

// keepHandoff lets a login restarted by this callback keep p's hand-off
// binding.
func keepHandoff(c *fiber.Ctx, p *session.Pending) { c.Locals(handoffKey, p.Handoff) }

// handOffLogin ends a callback whose login returns to a hand-off host: it
// issues a ticket bound to that host and to the browser's binding cookie
// there, and redirects to the host's /handoff. It reports whether it
// answered; a login for auth_host, for a host the session cookie reaches,
// or started without a binding on its host, is the caller's to finish.
func (s *Server) handOffLogin(c *fiber.Ctx, p *session.Pending, id session.Identity, tokens *session.Tokens) (bool, error) {
	host, ok := s.ticketHost(p.ReturnURL)
	if !ok || p.Handoff == "" {
		return false, nil
	}
	u, err := url.Parse(p.ReturnURL)
	if err != nil {
		return false, nil
	}
	raw, err := s.sessions.SaveTicket(c.UserContext(), &session.Ticket{Host: host, Binding: p.Handoff, Identity: id, Tokens: tokens})
	if err != nil {
		return true, storeError(err)
	}
	s.starts.release(requestOf(c).client)
	s.metrics.LoggedIn(p.Flow, id.UnionID != "")
	s.loginEvent(c, p.Flow, &id, id.AppID, id.Scope, "ok")
	noStore(c)
	q := url.Values{"ticket": {raw}, "rd": {u.RequestURI()}}
	return true, c.Redirect(s.public.Scheme+"://"+host+s.prefix+"/handoff?"+q.Encode(), http.StatusFound)
}

// localRedirect is rd as safeRedirect allows it, kept only if it stays on
// this host: a path, or an absolute URL on it made a path; else "/".
func (s *Server) localRedirect(c *fiber.Ctx, rd string) string {
	rd = s.safeRedirect(rd)
	if strings.HasPrefix(rd, "/") {
		return rd
	}
	u, err := url.Parse(rd)
	if err != nil {
		return "/"
	}
	_, authority, err := parseHost(u.Host)
	if err != nil || u.Scheme != s.public.Scheme || withoutDefaultPort(u.Scheme, authority) != s.here(c) {
		return "/"
	}
	// The path of "https://h//evil/" is "//evil/": a browser reads it as a
	// host.
	return s.safeRedirect(u.RequestURI())
}

// handoff redeems a ticket: GET /_wxgate/handoff?ticket=&rd=. The ticket
// must be for this host and, for a login started here, for this browser;
// the first request to redeem it gets a new session (a new ID: no
// fixation) and goes to rd on this host. Anything else gets a page
// offering the login again and changes nothing; a ticket shown to another
// browser than its own is used up.
func (s *Server) handoff(c *fiber.Ctx) error {
	ctx := c.UserContext()
	rd := s.localRedirect(c, c.Query("rd"))
	retry := s.prefix + "/start?" + url.Values{"rd": {rd}}.Encode()
	raw := c.Query("ticket")
	t, err := s.sessions.Ticket(ctx, raw)
	if isNotFound(err) {
		s.loginFailed(c, "handoff", "invalid")
		return loginExpired(retry)
	} else if err != nil {
		return storeError(err)
	}
	if t.Host != s.here(c) {
		s.loginFailed(c, "handoff", "wrong_host")
		return loginExpired(retry)
	}
	if t.Binding != "" {
		p := session.Pending{Binding: t.Binding}
		if !p.BoundTo(c.Cookies(s.cookies.binding)) {
			// The callback sends the ticket to the browser that logged in
			// on auth_host, but hb came in a URL anyone could write: a
			// ticket for one person bound to another's browser must not
			// stay good for that browser when its URL is shared.
			if _, err := s.sessions.ClaimTicket(ctx, raw); err != nil {
				return storeError(err)
			}
			s.loginFailed(c, "handoff", "other_browser")
			return otherBrowser(retry)
		}
	} else if fromAnotherSite(c) {
		// A web-view ticket is bound to no browser: anyone can mint one
		// for themselves, and a page elsewhere sending a visitor's browser
		// here would log it in as them (login CSRF). The web-view opens
		// it itself ("none"); the browser names any other initiator.
		s.loginFailed(c, "handoff", "other_site")
		return otherBrowser(retry)
	}
	first, err := s.sessions.ClaimTicket(ctx, raw)
	if err != nil {
		return storeError(err)
	}
	if !first {
		// The browser that used it asking again (a double redirect, a
		// reload) continues; anyone else starts over.
		if cur, err := s.sessions.Get(ctx, c.Cookies(s.sessionCookie(c))); err == nil && sameIdentity(&cur.Identity, &t.Identity) {
			noStore(c)
			return c.Redirect(rd, http.StatusFound)
		}
		s.loginFailed(c, "handoff", "used")
		return loginExpired(retry)
	}
	sess, err := s.replaceSession(c, t.Identity, t.Tokens)
	if err != nil {
		// The claim goes back: the browser's retry then finishes the
		// login instead of finding its ticket used.
		_ = s.sessions.ReleaseTicket(context.WithoutCancel(ctx), raw)
		return storeError(err)
	}
	s.setCookie(c, s.sessionCookie(c), sess.ID, s.cfg.Session.TTL)
	s.metrics.Login("handoff", "ok")
	s.loginEvent(c, "handoff", &t.Identity, t.Identity.AppID, t.Identity.Scope, "ok")
	noStore(c)
	return c.Redirect(rd, http.StatusFound)
}

// fromAnotherSite reports whether the browser says this navigation began
// on another site (Sec-Fetch-Site, which pages cannot set). Browsers that
// send none are not refused.
func fromAnotherSite(c *fiber.Ctx) bool {
	v := c.Get("Sec-Fetch-Site")
	return strings.EqualFold(v, "cross-site") || strings.EqualFold(v, "same-site")
}

func sameIdentity(a, b *session.Identity) bool {
	return a.OpenID == b.OpenID && a.AppID == b.AppID
}

// webviewTicket: POST /_wxgate/miniprogram/webview-ticket (bearer) ->
// {"ticket","expires_in":30}: a ticket for this host's /handoff, which
// gives the mini program's web-view a browser session for the same
// person. Only a mini-program login may ask: the mobile app's users reach
// pages in a browser where the official-account or QR login works.
func (s *Server) webviewTicket(c *fiber.Ctx) error {
	requestOf(c).api = true
	if s.mp.AppID == "" {
		return notConfigured("wechat.miniprogram")
	}
	f, err := s.bearerFamily(c)
	if err != nil {
		return err
	}
	if f.Identity.Scope != scopeMiniProgram || f.Identity.AppID != s.mp.AppID {
		return forbidden(errors.New("a web-view ticket needs a mini-program login")).asJSON()
	}
	raw, err := s.sessions.SaveTicket(c.UserContext(), &session.Ticket{Host: s.here(c), Identity: f.Identity})
	if err != nil {
		return storeError(err)
	}
	noStore(c)
	return c.JSON(fiber.Map{"ticket": raw, "expires_in": int(session.TicketTTL.Seconds())})
}
