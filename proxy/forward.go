package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/policies"
	"github.com/wxgate/wxgate/session"
)

// forward handles every request outside the prefix: route, look at the
// caller only if the route needs one, then proxy.
//
// The route is resolved from method, host, path and client address alone;
// public and deny routes never touch the session store, the token issuer or
// WeChat, and a public route is forwarded without identity headers (issue
// 10). Only when some reading of the path is a login route is the caller
// looked up and the request decided again with its identity.
func (s *Server) forward(c *fiber.Ctx) error {
	r := requestOf(c)
	p, err := policies.ParsePath(string(c.Request().URI().PathOriginal()))
	if err != nil {
		setRoute(c, "invalid")
		return invalidRequest(err)
	}
	if r.upgrade, err = webSocketUpgrade(&c.Request().Header); err != nil {
		setRoute(c, "invalid")
		return invalidRequest(err)
	}
	// One snapshot of the routes and upstreams for the whole request.
	l := s.live.Load()
	d, who, err := s.judge(c, r, l, c.Method(), r.host, p)
	if err != nil {
		return err
	}
	rule := d.Rule
	if d.Outcome == policies.NeedLogin {
		if answer, ok := probe(c.Method(), l, p.Forward); ok {
			if answer != policies.ProbeUpstream {
				return probeRefusal(answer, s.startURL(c, p.Forward, rule.Scope))
			}
			d.Outcome = policies.Allow // to the upstream, without identity
		}
	}
	if d.Outcome != policies.Allow {
		s.denied(c, rule.Name, denialReason(d), callerIdentity(who))
	}
	switch d.Outcome {
	case policies.NeedLogin, policies.NeedScope:
		return s.needLogin(c, rule, p.Forward, d.Outcome)
	case policies.Forbidden:
		return forbidden(fmt.Errorf("route %s on the %s reading %q", rule.Name, d.Reading, d.Path))
	}
	if r.upgrade && who != nil && who.family == nil && !s.webSocketOrigin(c) {
		s.denied(c, rule.Name, "websocket_origin", who.id)
		return forbidden(fmt.Errorf("a WebSocket with the session cookie from the page of another site (Origin %q)", c.Get(fiber.HeaderOrigin)))
	}
	if err := s.checkWeChatToken(who, rule); err != nil {
		return err
	}
	up := l.upstreams[rule.Upstream]
	if up == nil {
		return fmt.Errorf("route %s: no upstream %q", rule.Name, rule.Upstream)
	}
	r.upstream = up.name

	req := c.Request()
	sanitizeRequest(&req.Header, r.trusted)
	if !rule.PassAuthorization {
		// Bearer tokens are wxgate's; upstreams get identity headers and the
		// signed assertion. Basic credentials meant for the upstream pass.
		if _, bearer := bearerAuthorization(&req.Header); bearer {
			req.Header.Del(fiber.HeaderAuthorization)
		}
	}
	req.Header.Set(fiber.HeaderXRequestID, r.id)
	setForwarded(&req.Header, r.client, r.scheme, r.authority, r.trusted)
	if who != nil {
		assertion, err := s.issuer.Assertion(who.holder, who.id, up.name)
		if err != nil {
			return err
		}
		setIdentity(&req.Header, who, assertion, identityOptions{phone: rule.PassPhone, wechatToken: rule.PassWeChatToken})
	}
	// Forward the path every reading of which the policy judged, its
	// encoded delimiters still encoded; the query as sent.
	req.URI().SetPath(p.Forward)
	req.URI().SetScheme(up.scheme)
	// wxgate speaks HTTP/1.1 to upstreams whatever the client spoke (RFC
	// 9110 section 6.2), and adds no Content-Type the client did not send.
	req.Header.SetProtocol("HTTP/1.1")
	req.Header.SetNoDefaultContentType(true)
	req.UseHostHeader = true
	req.Header.SetHost(r.authority)
	req.URI().SetHost(up.hc.Addr)
	if r.upgrade {
		return s.tunnelTo(c, up)
	}
	resp := c.Response()
	var body *clientBody
	size := req.Header.ContentLength()
	if req.IsBodyStream() {
		body = &clientBody{r: req.BodyStream(), trailers: func() bool { return hasTrailers(&req.Header) }, hungUp: hungUp(c.Context()), resp: resp}
		req.SetBodyStream(body, size)
	} else if size == -1 && hasTrailers(&req.Header) {
		return badBody(errTrailers)
	}

	start := time.Now()
	err = up.hc.Do(req, resp)
	if err != nil && (body == nil || body.err == nil) {
		err = up.resend(req, resp, body, size, err)
	}
	if body != nil && body.err != nil {
		// The client's body broke (framing, a short body): its error, not
		// the upstream's.
		s.metrics.Upstream(up.name, "client_error", time.Since(start))
		return badBody(body.err)
	}
	took := time.Since(start) // until the headers
	if err == nil {
		err = readAnswer(resp, r.id)
	}
	if err != nil {
		outcome := "error"
		if isTimeout(err) {
			outcome = "timeout"
		}
		s.metrics.Upstream(up.name, outcome, took)
		return upstreamError(up.name, err)
	}
	s.metrics.Upstream(up.name, "ok", took)
	removeHopByHop(&resp.Header)
	return nil
}

// judge decides a request for method, host and path p from r's client
// with the routes of l:
// first without a caller, and only when some reading is a login route with
// the caller of c (its cookie or bearer token), again. Proxied requests
// (forward) and forward-auth questions (forwardAuth) are decided by it
// alone, so the two cannot drift apart. It records the deciding route on
// r (logs, metrics, and whether errors answer as JSON). err is a store
// failure, or a bearer token's failure, which the client must hear (to
// refresh or log in again) whatever the route decided.
func (s *Server) judge(c *fiber.Ctx, r *request, l *live, method, host string, p policies.Path) (d policies.Decision, who *caller, err error) {
	route := l.engine.Route(method, host, p, r.client)
	d = route.Decide(nil)
	var authErr error
	if d.Outcome == policies.NeedLogin {
		who, authErr, err = s.currentCaller(c, r)
		if who != nil {
			d = route.Decide(policyIdentity(who))
		}
	}
	r.route, r.api = d.Rule.Name, d.Rule.API
	if err == nil && authErr != nil {
		reason := "invalid_token"
		if errors.Is(authErr, session.ErrTokenExpired) {
			reason = "token_expired"
		}
		s.denied(c, d.Rule.Name, reason, nil)
		err = authErr
	}
	return d, who, err
}

// checkWeChatToken refuses to forward a caller's expired WeChat access
// token to a pass_wechat_token route: the upstream would call WeChat with
// it and fail. The refresh failed or is still running (WeChat is down), so
// the answer is 503 with Retry-After, never a logout. Routes that only need
// the identity are served with it (issue 9).
func (s *Server) checkWeChatToken(who *caller, rule *policies.Rule) error {
	if who == nil || who.tokens == nil || !rule.PassWeChatToken {
		return nil
	}
	now := s.sessions.Now()
	if now.Before(who.tokens.ExpiresAt) {
		return nil
	}
	retry := time.Second
	if s.inBackoff(who.tokens, now) {
		retry = max(retry, (who.tokens.RetryAt.Sub(now) + time.Second - 1).Truncate(time.Second))
	}
	return wechatUnavailable(errors.New("the WeChat access token expired and its refresh has not succeeded"), retry)
}

// readAnswer prepares the upstream's answer in resp for the client. A body
// of known length up to streamAbove is read whole, so that a cut one is a
// 502 rather than a truncated answer, and the upstream connection goes
// back to the pool before a slow client has read a byte; a longer or
// chunked body streams, and a cut aborts the client's connection
// (upstreamConn.Read).
func readAnswer(resp *fasthttp.Response, rid string) error {
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// Its connection is never used again (upstreamConn.switched).
		return errSwitchedUnasked
	}
	if !resp.IsBodyStream() {
		// fasthttp has already put the connection back in the pool.
		return nil
	}
	if c := connOf(resp); c != nil {
		c.answered(resp, rid)
	}
	if n := resp.Header.ContentLength(); n < 0 || n > streamAbove {
		return nil
	}
	buf := answerBufs.Get().(*bytes.Buffer)
	defer answerBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(resp.BodyStream()); err != nil {
		// The error page replaces the answer; closing the unfinished
		// stream discards the connection.
		return err
	}
	resp.SetBody(buf.Bytes())
	return nil
}

// answerBufs hold small answer bodies while they are read whole.
var answerBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// currentSession returns the browser's session, nil when it has none (no
// cookie, a malformed or unknown one). A store failure is an error, never a
// logout.
func (s *Server) currentSession(c *fiber.Ctx) (*session.Session, error) {
	id := c.Cookies(s.sessionCookie(c))
	if !session.ValidID(id) {
		return nil, nil
	}
	sess, err := s.sessions.Get(c.UserContext(), id)
	switch {
	case isNotFound(err):
		return nil, nil
	case err != nil:
		return nil, storeError(err)
	}
	return sess, nil
}

// needLogin answers a request whose identity is missing (NeedLogin) or
// has too small a scope (NeedScope): page loads go to start, keeping their
// place; other requests, WebSocket handshakes among them, get 401, or 403
// for a missing scope.
func (s *Server) needLogin(c *fiber.Ctx, rule *policies.Rule, path string, outcome policies.Outcome) error {
	scope, answer := rule.Scope, loginRequired
	if outcome == policies.NeedScope {
		scope, answer = routeUserinfo, insufficientScope
	}
	link := s.startURL(c, path, scope)
	if !rule.API && !wantsJSON(c) && !requestOf(c).upgrade && (c.Method() == http.MethodGet || c.Method() == http.MethodHead) {
		noStore(c)
		return c.Redirect(link, http.StatusFound)
	}
	return answer(link)
}

// probe reports how a GET or HEAD of a probe path ([policy] probes:
// favicons, robots.txt) that needs a login is answered: browsers and
// crawlers fetch them by themselves, and must not start logins.
func probe(method string, l *live, path string) (answer string, ok bool) {
	if method != http.MethodGet && method != http.MethodHead {
		return "", false
	}
	return l.engine.Probe(path)
}

// probeRefusal is a probe's answer other than the upstream's: 404, or 401
// with the login link but no redirect.
func probeRefusal(answer, link string) error {
	if answer == policies.ProbeUnauthorized {
		return loginRequired(link)
	}
	return notFound(errors.New("a probe path on a login route, asked without a login"))
}

// startURL is the login URL that returns to path (a Path.Forward, escaped)
// and the request's query.
func (s *Server) startURL(c *fiber.Ctx, path, scope string) string {
	rd := path
	if q := c.Request().URI().QueryString(); len(q) > 0 && len(rd)+1+len(q) <= maxReturnURL {
		// A query too long to keep is dropped: the login still returns to
		// the page.
		rd += "?" + string(q)
	}
	if len(rd) > maxReturnURL {
		rd = "/"
	}
	return s.prefix + "/start?rd=" + url.QueryEscape(rd) + "&scope=" + scope
}

// wantsJSON reports whether the client prefers JSON to a page.
func wantsJSON(c *fiber.Ctx) bool {
	a := c.Get(fiber.HeaderAccept)
	return a != "" && c.Accepts(fiber.MIMETextHTML, fiber.MIMEApplicationJSON) == fiber.MIMEApplicationJSON
}
