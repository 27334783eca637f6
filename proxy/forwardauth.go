package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/policies"
)

// Forward auth (issue 11, DESIGN.md "Public endpoints"): nginx
// auth_request, Caddy forward_auth, Traefik ForwardAuth and Envoy ext_authz
// ask GET {prefix}/auth whether a request they hold may pass. wxgate
// decides it exactly as a request it proxies itself (judge) and answers
// 200 with the identity headers, 401 with the login URL in Location (302
// with ?mode=redirect), or 403.

// errUntrustedAuth refuses a forward-auth question from a peer outside
// [server] trusted_proxies: the request it describes is whatever the peer
// wrote in headers it chose.
var errUntrustedAuth = errors.New("proxy: forward auth asked by a peer that is not a trusted proxy")

// original is the request a proxy asks about.
type original struct {
	method string
	scheme string
	// host and authority as parseHost gives them.
	host, authority string
	// path and query as sent, still escaped; query without its "?".
	path, query string
}

// forwardAuth answers a trusted proxy's question about a request it holds.
// {prefix}/auth names the request in headers (nginx, Caddy, Traefik);
// {prefix}/auth/ORIGINAL-URI is how Envoy's ext_authz HTTP service asks
// (path_prefix), with the original method and Host, and passes the answer
// to the client as it is, so a login there is a redirect. Which form is
// read from the raw URI, not fiber's match, which ignores case and a
// trailing slash.
func (s *Server) forwardAuth(c *fiber.Ctx) error {
	r := requestOf(c)
	if !r.trusted {
		return forbidden(errUntrustedAuth)
	}
	uri := originForm(c.Request().Header.RequestURI())
	path, _, _ := bytes.Cut(uri, []byte("?"))
	// Compared in two parts: building prefix+"/auth" would allocate on
	// every question, that is on every request of the proxy.
	if n := len(s.prefix); len(path) > n && string(path[:n]) == s.prefix && string(path[n:]) == "/auth" {
		o, err := readOriginal(&c.Request().Header, r)
		return s.answerAuth(c, r, o, err, c.Query("mode") == "redirect")
	}
	o, err := readPathForm(&c.Request().Header, r, string(uri), s.prefix)
	return s.answerAuth(c, r, o, err, true)
}

// originForm is a request target in origin form: an absolute-form target
// (which the edge accepts only with the Host's authority) without its
// scheme and authority, the rest as sent.
func originForm(uri []byte) []byte {
	_, rest, ok := bytes.Cut(uri, []byte("://"))
	if len(uri) == 0 || uri[0] == '/' || !ok {
		return uri
	}
	if i := bytes.IndexAny(rest, "/?"); i >= 0 {
		if rest[i] == '?' {
			return append([]byte("/"), rest[i:]...)
		}
		return rest[i:]
	}
	return []byte("/")
}

// readPathForm reads the original request from the auth request's own
// method and uri, its raw URI in origin form (not fiber's path, which
// routing may have matched in another case), after prefix/auth.
func readPathForm(h *fasthttp.RequestHeader, r *request, uri, prefix string) (original, error) {
	rest, ok := strings.CutPrefix(uri, prefix)
	if ok {
		rest, ok = strings.CutPrefix(rest, "/auth")
	}
	if !ok || !strings.HasPrefix(rest, "/") {
		return original{}, fmt.Errorf("URI %q: not %s/auth followed by the original path", withoutQuery(uri), prefix)
	}
	if strings.ContainsRune(rest, '#') {
		return original{}, fmt.Errorf("URI %q: a fragment", withoutQuery(rest))
	}
	// A proxy that names the request in headers, asking with a trailing
	// slash, would otherwise have every request decided as "/".
	for _, name := range []string{"X-Forwarded-Uri", "X-Original-URL", "X-Forwarded-Method"} {
		if len(h.Peek(name)) > 0 {
			return original{}, fmt.Errorf("URI %q names the request, and so does %s", withoutQuery(uri), name)
		}
	}
	o := original{method: string(h.Method()), scheme: r.scheme, host: r.host, authority: r.authority}
	o.path, o.query, _ = strings.Cut(rest, "?")
	return o, nil
}

// answerAuth decides o, which err says could not be read, and answers the
// proxy. redirect answers a needed login with a 302 instead of a 401,
// except on api routes, whose clients cannot follow a login page.
func (s *Server) answerAuth(c *fiber.Ctx, r *request, o original, err error, redirect bool) error {
	if err != nil {
		setRoute(c, "invalid")
		return invalidRequest(fmt.Errorf("forward auth: %w", err))
	}
	p, err := policies.ParsePath(o.path)
	if err != nil {
		setRoute(c, "invalid")
		return invalidRequest(fmt.Errorf("forward auth: %w", err))
	}
	if hasDotSegment(o.path) {
		// The proxy passes the path to the app as sent: wxgate would decide
		// "/vip/../orders" as /orders, an app that routes before removing
		// dot segments (Express, a WSGI router) as /vip, and one that keeps
		// "//" as a segment ("/vip//../orders" is /vip/orders by RFC 3986)
		// as neither. Browsers never send dot segments. 403, not 400:
		// nginx's auth_request makes any other refusal a 500.
		setRoute(c, "invalid")
		return forbidden(fmt.Errorf("forward auth: path %q has dot segments, which the proxy would pass to the app as sent", o.path))
	}
	// One snapshot of the routes and upstreams for the whole request.
	l := s.live.Load()
	d, who, err := s.judge(c, r, l, o.method, o.host, p)
	if err != nil {
		return err
	}
	rule := d.Rule
	// The proxy sends the app the path as it was asked, not p.Forward: a
	// probe is one only as sent ("/orders/../favicon.ico" reaches an app
	// that routes before removing dot segments as /orders).
	if d.Outcome == policies.NeedLogin && o.path == p.Forward {
		if answer, ok := probe(o.method, l, p.Forward); ok {
			if answer != policies.ProbeUpstream {
				// No Location: nginx's error_page would make it a login.
				return probeRefusal(answer, s.authStartURL(o, p.Forward, rule.Scope))
			}
			d.Outcome = policies.Allow // to the app, without identity
		}
	}
	if d.Outcome != policies.Allow {
		s.denied(c, rule.Name, denialReason(d), callerIdentity(who))
	}
	switch d.Outcome {
	case policies.NeedLogin, policies.NeedScope:
		scope := rule.Scope
		if d.Outcome == policies.NeedScope {
			scope = routeUserinfo
		}
		link := s.authStartURL(o, p.Forward, scope)
		if redirect && !rule.API {
			noStore(c)
			return c.Redirect(link, http.StatusFound)
		}
		return authLoginRequired(link)
	case policies.Forbidden:
		return forbidden(fmt.Errorf("forward auth: route %s on the %s reading %q", rule.Name, d.Reading, d.Path))
	}
	if who != nil && who.family == nil && askedWebSocket(&c.Request().Header) && !s.webSocketOrigin(c) {
		s.denied(c, rule.Name, "websocket_origin", who.id)
		return forbidden(fmt.Errorf("forward auth: a WebSocket with the session cookie from the page of another site (Origin %q)", c.Get(fiber.HeaderOrigin)))
	}
	if err := s.checkWeChatToken(who, rule); err != nil {
		return err
	}
	noStore(c)
	c.Status(http.StatusOK)
	if raw := rawCookies(&c.Request().Header); raw != nil {
		// The Cookie the app may see: the proxy passes it instead of the
		// browser's, which carries wxgate's session ID.
		c.Response().Header.SetBytesV(fiber.HeaderCookie, withoutOwnCookies(raw))
	}
	if who == nil {
		// A public route: the proxy passes the request without identity.
		return nil
	}
	up := l.upstreams[rule.Upstream]
	if up == nil {
		return fmt.Errorf("route %s: no upstream %q", rule.Name, rule.Upstream)
	}
	assertion, err := s.issuer.Assertion(who.holder, who.id, up.name)
	if err != nil {
		return err
	}
	setIdentity(&c.Response().Header, who, assertion, identityOptions{phone: rule.PassPhone, wechatToken: rule.PassWeChatToken})
	return nil
}

// readOriginal reads the request a proxy asks about: X-Forwarded-Method
// (default GET) and X-Forwarded-Uri, with the host and scheme the edge read
// from X-Forwarded-Host and X-Forwarded-Proto (r); or, without
// X-Forwarded-Uri, the absolute X-Original-URL (nginx:
// $scheme://$http_host$request_uri). r is a trusted proxy's request.
func readOriginal(h *fasthttp.RequestHeader, r *request) (original, error) {
	o := original{method: http.MethodGet}
	if m := h.Peek("X-Forwarded-Method"); len(m) > 0 {
		for _, b := range m {
			if !isTokenChar(b) {
				return o, fmt.Errorf("X-Forwarded-Method %q: not a method", m)
			}
		}
		o.method = string(m)
	}
	var uri string
	if v := h.Peek("X-Forwarded-Uri"); len(v) > 0 {
		o.scheme, o.host, o.authority = r.scheme, r.host, r.authority
		uri = string(v)
	} else if v := h.Peek("X-Original-URL"); len(v) > 0 {
		var err error
		if o.scheme, o.host, o.authority, uri, err = splitAbsolute(string(v)); err != nil {
			return o, fmt.Errorf("X-Original-URL: %w", err)
		}
	} else {
		return o, errors.New("neither X-Forwarded-Uri nor X-Original-URL names the request")
	}
	if !strings.HasPrefix(uri, "/") {
		return o, fmt.Errorf("URI %q: not a path", withoutQuery(uri))
	}
	if strings.ContainsRune(uri, '#') {
		return o, fmt.Errorf("URI %q: a fragment", withoutQuery(uri))
	}
	o.path, o.query, _ = strings.Cut(uri, "?")
	return o, nil
}

// withoutQuery is uri for an error message, which is logged: its query
// (and fragment) may carry a code or a token, as the access line knows.
func withoutQuery(uri string) string {
	if i := strings.IndexAny(uri, "?#"); i >= 0 {
		return uri[:i] + "?..."
	}
	return uri
}

// splitAbsolute splits an absolute http(s) URL into scheme, host (through
// parseHost) and the request URI, which stays as sent: url.Parse would
// decode the path that ParsePath must read itself.
func splitAbsolute(v string) (scheme, host, authority, uri string, err error) {
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return "", "", "", "", fmt.Errorf("%q: not an absolute http(s) URL", withoutQuery(v))
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if host, authority, err = parseHost(rest[:end]); err != nil {
		return "", "", "", "", err
	}
	uri = rest[end:]
	if uri == "" || uri[0] == '?' {
		uri = "/" + uri
	}
	return scheme, host, authority, uri, nil
}

// authStartURL is the absolute login URL for a forward-auth answer: the
// proxy sends the browser there, wherever the proxy is. It returns to the
// original URL (path as forward would send it, and the query) when /start
// would accept it as a target, else to the path on the public URL's host:
// a host outside allowed_redirect_hosts would become "/" there anyway.
func (s *Server) authStartURL(o original, path, scope string) string {
	rd := path
	if o.query != "" && len(rd)+1+len(o.query) <= maxReturnURL-len(o.scheme)-3-len(o.authority) {
		// A query too long to keep is dropped: the login still returns to
		// the page.
		rd += "?" + o.query
	}
	if abs := o.scheme + "://" + o.authority + rd; len(abs) <= maxReturnURL {
		if u, err := url.Parse(abs); err == nil && s.allowedOrigin(u) {
			rd = abs
		}
	}
	if len(rd) > maxReturnURL {
		rd = "/"
	}
	return strings.TrimSuffix(s.public.String(), "/") + s.prefix + "/start?rd=" + url.QueryEscape(rd) + "&scope=" + scope
}

// rawCookies is the request's Cookie lines as sent, joined with "; ", or
// nil without one. Peek would give fasthttp's rebuilt header once the
// session cookie was read: quotes stripped, and only the first line before.
func rawCookies(h *fasthttp.RequestHeader) []byte {
	var out []byte
	for line := range bytes.SplitSeq(h.RawHeaders(), []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !equalFold(name, "cookie") {
			continue
		}
		if out != nil {
			out = append(out, "; "...)
		}
		out = append(out, bytes.TrimSpace(value)...)
	}
	return out
}

// withoutOwnCookies is a Cookie header's value without wxgate's cookies,
// the others' bytes as sent; empty when only wxgate's were there.
func withoutOwnCookies(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for pair := range bytes.SplitSeq(raw, []byte(";")) {
		pair = bytes.TrimSpace(pair)
		name, _, _ := bytes.Cut(pair, []byte("="))
		if len(pair) == 0 || slices.Contains(ownCookies, string(bytes.TrimSpace(name))) {
			continue
		}
		if len(out) > 0 {
			out = append(out, "; "...)
		}
		out = append(out, pair...)
	}
	return out
}

// hasDotSegment reports whether a raw path has a segment that is "." or
// "..", literally or percent-encoded ("%2e", ".%2E").
func hasDotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if len(seg) == 0 || len(seg) > 6 || seg[0] != '.' && seg[0] != '%' {
			continue
		}
		switch strings.ToLower(seg) {
		case ".", "..", "%2e", "%2e%2e", ".%2e", "%2e.":
			return true
		}
	}
	return false
}
