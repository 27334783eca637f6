package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// problem is what went wrong, as the client is told: each one has exactly
// one status, page and JSON error code, in problems. Handlers pick a
// problem through a constructor below, never a status (issue 10).
type problem uint8

// Problems. problemInternal is the zero value: an Error nobody classified
// is a 500.
const (
	problemInternal problem = iota
	problemBadRequest
	problemVersion
	problemMethodNotAllowed
	problemRequestTimeout
	problemBodyTooLarge
	problemHeadersTooLarge
	problemNotFound
	problemLoginRequired
	problemInsufficientScope
	problemForbidden
	problemTokenExpired
	problemInvalidToken
	problemInvalidGrant
	problemLoginExpired
	problemOtherBrowser
	problemRefused
	problemCodeInvalid
	problemTooManyLogins
	problemTooManyWebSockets
	problemWebSocketsFull
	problemWeChatError
	problemWeChatUnavailable
	problemAppTokenBlocked
	problemUnavailable
	problemUpstreamDown
	problemUpstreamTimeout
	numProblems
)

// problemInfo is what a problem answers.
type problemInfo struct {
	name   string // for tests and golden files
	status int
	page   string // the browser's page: a key of messages
	code   string // the JSON answer's "error" (DESIGN.md "API clients")
	// desc is the JSON answer's "error_description"; empty: the page's
	// English text.
	desc string
}

// problems is the one table of what each problem answers.
var problems = [numProblems]problemInfo{
	problemInternal:          {"internal", http.StatusInternalServerError, "internal", "server_error", ""},
	problemBadRequest:        {"bad_request", http.StatusBadRequest, "bad_request", "invalid_request", descMalformed},
	problemVersion:           {"version", http.StatusHTTPVersionNotSupported, "bad_request", "invalid_request", descMalformed},
	problemMethodNotAllowed:  {"method_not_allowed", http.StatusMethodNotAllowed, "bad_request", "invalid_request", descMalformed},
	problemRequestTimeout:    {"request_timeout", http.StatusRequestTimeout, "bad_request", "invalid_request", descMalformed},
	problemBodyTooLarge:      {"body_too_large", http.StatusRequestEntityTooLarge, "bad_request", "invalid_request", descMalformed},
	problemHeadersTooLarge:   {"headers_too_large", http.StatusRequestHeaderFieldsTooLarge, "bad_request", "invalid_request", descMalformed},
	problemNotFound:          {"not_found", http.StatusNotFound, "not_found", "not_found", ""},
	problemLoginRequired:     {"login_required", http.StatusUnauthorized, "login_required", "login_required", ""},
	problemInsufficientScope: {"insufficient_scope", http.StatusForbidden, "insufficient_scope", "insufficient_scope", ""},
	problemForbidden:         {"forbidden", http.StatusForbidden, "forbidden", "forbidden", ""},
	problemTokenExpired:      {"token_expired", http.StatusUnauthorized, "login_required", "token_expired", "the access token has expired; refresh it"},
	problemInvalidToken:      {"invalid_token", http.StatusUnauthorized, "login_required", "invalid_token", "the access token is invalid"},
	problemInvalidGrant:      {"invalid_grant", http.StatusUnauthorized, "login_required", "invalid_grant", "the refresh token is invalid, expired, revoked or already used; log in again"},
	problemLoginExpired:      {"login_expired", http.StatusBadRequest, "login_expired", "invalid_request", descMalformed},
	problemOtherBrowser:      {"other_browser", http.StatusForbidden, "other_browser", "invalid_request", descMalformed},
	problemRefused:           {"refused", http.StatusForbidden, "refused", "access_denied", ""},
	problemCodeInvalid:       {"code_invalid", http.StatusBadRequest, "code_invalid", "invalid_grant", "the login code is invalid, expired or already used; get a new one and log in again"},
	problemTooManyLogins:     {"too_many_logins", http.StatusTooManyRequests, "too_many_logins", "too_many_requests", "too many logins were started from this network; try again in a few minutes"},
	problemTooManyWebSockets: {"too_many_websockets", http.StatusTooManyRequests, "too_many_websockets", "too_many_requests", "too many WebSockets are open from this network; close some and try again"},
	problemWebSocketsFull:    {"websockets_full", http.StatusServiceUnavailable, "unavailable", "unavailable", ""},
	problemWeChatError:       {"wechat_error", http.StatusBadGateway, "wechat_error", "wechat_error", ""},
	problemWeChatUnavailable: {"wechat_unavailable", http.StatusServiceUnavailable, "wechat_unavailable", "wechat_unavailable", ""},
	problemAppTokenBlocked:   {"app_token_blocked", http.StatusServiceUnavailable, "wechat_unavailable", "app_token_blocked", ""},
	problemUnavailable:       {"unavailable", http.StatusServiceUnavailable, "unavailable", "unavailable", ""},
	problemUpstreamDown:      {"upstream_down", http.StatusBadGateway, "upstream_down", "upstream_down", ""},
	problemUpstreamTimeout:   {"upstream_timeout", http.StatusGatewayTimeout, "upstream_timeout", "upstream_timeout", ""},
}

const descMalformed = "the request is malformed"

// descZh is each JSON error_description of the table in Chinese, for a
// client whose Accept-Language asks for it.
var descZh = map[string]string{
	descMalformed: "请求格式有误。",
	"the access token has expired; refresh it":                                           "访问令牌已过期，请刷新后重试。",
	"the access token is invalid":                                                        "访问令牌无效。",
	"the refresh token is invalid, expired, revoked or already used; log in again":       "刷新令牌无效、已过期、已撤销或已使用，请重新登录。",
	"the login code is invalid, expired or already used; get a new one and log in again": "登录码无效、已过期或已使用，请重新获取后登录。",
	"too many logins were started from this network; try again in a few minutes":         "此网络发起的登录过多，请几分钟后再试。",
	"too many WebSockets are open from this network; close some and try again":           "此网络打开的实时连接过多，请关闭一些后重试。",
}

func (p problem) String() string { return problems[p].name }

// Error is a failure with the answer the browser or API client gets.
// Handlers return one from the constructors below (or any other error,
// which classify maps); handleError turns it into the response.
type Error struct {
	problem problem
	// Err is the cause, logged with the request ID and never shown.
	Err error
	// link, if set, is offered on the page (try again, log in) and as the
	// JSON answer's login_url.
	link string
	// json forces a JSON answer; otherwise it follows the route (api) and
	// Accept.
	json bool
	// retryAfter, if set, is sent as Retry-After (429, 503).
	retryAfter time.Duration
	// location, if set, is sent as Location: forward auth's 401, which
	// nginx's error_page turns into the browser's redirect to the login.
	location string
	// close ends the connection after the answer: after a malformed request
	// nothing that follows on the connection can be trusted to start a new
	// one.
	close bool
}

func (e *Error) Error() string {
	page := problems[e.problem].page
	if e.Err != nil {
		return page + ": " + e.Err.Error()
	}
	return page
}

func (e *Error) Unwrap() error { return e.Err }

// asJSON makes e answer JSON whatever the client accepts: the API
// endpoints and the admin listener speak nothing else.
func (e *Error) asJSON() *Error {
	e.json = true
	return e
}

// invalidRequest is the client's malformed request (a path, a form, a
// parameter): 400 invalid_request.
func invalidRequest(err error) *Error { return &Error{problem: problemBadRequest, Err: err} }

// badRequest is the 400 invalid_request answer of the API endpoints.
func badRequest(format string, a ...any) *Error {
	return invalidRequest(fmt.Errorf(format, a...)).asJSON()
}

// malformed is the edge's refusal of a request that breaks HTTP: 400, or
// 505 for a version other than HTTP/1.x, and the connection closes, since
// where the next request starts is not known.
func malformed(err error) *Error {
	p := problemBadRequest
	if errors.Is(err, errVersion) {
		p = problemVersion
	}
	return &Error{problem: p, Err: err, close: true}
}

// badBody is a request body that is the client's error: 400, and the
// connection closes, since where the body ends is not known.
func badBody(err error) *Error {
	return &Error{problem: problemBadRequest, Err: fmt.Errorf("reading the request body: %w", err), close: true}
}

// notFound answers 404.
func notFound(err error) *Error { return &Error{problem: problemNotFound, Err: err} }

// notConfigured is the 404 of an API endpoint whose app is not configured.
func notConfigured(app string) *Error {
	return notFound(fmt.Errorf("%s is not configured", app)).asJSON()
}

// forbidden answers 403: a deny route, a caller not on an allow list, a
// request from the wrong origin.
func forbidden(err error) *Error { return &Error{problem: problemForbidden, Err: err} }

// loginRequired answers a request without the identity its route needs:
// 401, offering the login at link.
func loginRequired(link string) *Error { return &Error{problem: problemLoginRequired, link: link} }

// authLoginRequired is forward auth's answer to a question whose request
// needs a login (or a larger scope): 401 with the login URL in Location
// for the proxy to send the browser to.
func authLoginRequired(link string) *Error {
	return &Error{problem: problemLoginRequired, link: link, location: link}
}

// insufficientScope answers a caller whose login lacks the route's scope:
// 403, offering the authorization at link.
func insufficientScope(link string) *Error {
	return &Error{problem: problemInsufficientScope, link: link}
}

// invalidToken is the 401 of a bearer token that is not (or no longer)
// valid, for API clients.
func invalidToken(err error) *Error {
	return &Error{problem: problemInvalidToken, Err: err, json: true}
}

// Answers of the official-account callback; each offers the login again
// at retry.
func loginExpired(retry string) *Error { return &Error{problem: problemLoginExpired, link: retry} }
func otherBrowser(retry string) *Error { return &Error{problem: problemOtherBrowser, link: retry} }
func refused(retry string) *Error      { return &Error{problem: problemRefused, link: retry} }
func codeInvalid(retry string) *Error  { return &Error{problem: problemCodeInvalid, link: retry} }

// tooManyLogins answers a start beyond the pending-login bounds: 429,
// retry in a minute.
func tooManyLogins(err error) *Error {
	return &Error{problem: problemTooManyLogins, Err: err, retryAfter: time.Minute}
}

// tooManyWebSockets answers a handshake past max_websockets_per_client:
// 429, retry in a minute; webSocketsFull one past max_websockets: 503.
func tooManyWebSockets(err error) *Error {
	return &Error{problem: problemTooManyWebSockets, Err: err, retryAfter: time.Minute}
}

func webSocketsFull(err error) *Error {
	return &Error{problem: problemWebSocketsFull, Err: err, retryAfter: 10 * time.Second}
}

// wechatUnavailable answers 503 when WeChat cannot serve the request now;
// retry is the Retry-After (0: none).
func wechatUnavailable(err error, retry time.Duration) *Error {
	return &Error{problem: problemWeChatUnavailable, Err: err, retryAfter: retry}
}

// appTokenBlocked answers an app access token WeChat will not issue now
// (wechat.ErrBlocked): 503 app_token_blocked, as JSON.
func appTokenBlocked(err error) *Error {
	return &Error{problem: problemAppTokenBlocked, Err: err, json: true}
}

// storeError is the answer when the session store fails: 503, never a
// logout.
func storeError(err error) *Error { return &Error{problem: problemUnavailable, Err: err} }

// apiCodeInvalid answers an API login whose code WeChat refused as invalid
// or used (40029, 40163): the user's doing, so 400 invalid_grant with the
// errcode, not a 502.
func apiCodeInvalid(err error) *Error {
	return &Error{problem: problemCodeInvalid, Err: err, json: true}
}

// upstreamError answers an upstream that failed: 504 when it timed out,
// else 502.
func upstreamError(name string, err error) *Error {
	p := problemUpstreamDown
	if isTimeout(err) {
		p = problemUpstreamTimeout
	}
	return &Error{problem: p, Err: fmt.Errorf("upstream %s: %w", name, err)}
}

// apiWeChatError makes a WeChat failure an API answer (502 wechat_error
// with errcode, or 503 wechat_unavailable).
func apiWeChatError(err error) error { return classify(err).asJSON() }

// apiLoginError is apiWeChatError for the exchange of a login code, where
// an invalid or used code (40029, 40163) is the user's: apiCodeInvalid.
func apiLoginError(err error) error {
	if wechat.HasCode(err, wechat.CodeInvalidCode, wechat.CodeCodeUsed) {
		return apiCodeInvalid(err)
	}
	return apiWeChatError(err)
}

// classify maps any error to the Error the client sees: the one place an
// error that is not already an *Error gets its problem.
func classify(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		// What fiber and fasthttp refuse before a handler runs
		// (App.serverErrorHandler), and the router's own answers.
		switch {
		case fe.Code == http.StatusNotFound:
			return notFound(err)
		case fe.Code == http.StatusMethodNotAllowed:
			return &Error{problem: problemMethodNotAllowed, Err: err}
		case fe.Code == http.StatusRequestTimeout:
			return &Error{problem: problemRequestTimeout, Err: err}
		case fe.Code == http.StatusRequestEntityTooLarge:
			return &Error{problem: problemBodyTooLarge, Err: err}
		case fe.Code == http.StatusRequestHeaderFieldsTooLarge:
			return &Error{problem: problemHeadersTooLarge, Err: err}
		case fe.Code >= 400 && fe.Code < 500:
			return invalidRequest(err)
		}
	}
	var we *wechat.Error
	switch {
	case errors.Is(err, session.ErrUnavailable):
		return storeError(err)
	case errors.Is(err, session.ErrTokenExpired):
		return &Error{problem: problemTokenExpired, Err: err, json: true}
	case errors.Is(err, session.ErrInvalidToken):
		return invalidToken(err)
	case errors.Is(err, session.ErrInvalidGrant):
		return &Error{problem: problemInvalidGrant, Err: err, json: true}
	case errors.Is(err, wechat.ErrBadEncryptedData):
		return invalidRequest(err).asJSON()
	case errors.As(err, &we):
		return &Error{problem: problemWeChatError, Err: err}
	case errors.Is(err, wechat.ErrUnavailable):
		return wechatUnavailable(err, 0)
	case errors.Is(err, context.DeadlineExceeded):
		return storeError(err)
	}
	return &Error{problem: problemInternal, Err: err}
}

// handleError is the one place errors become responses: it logs the detail
// with the request ID and sends a generic page or JSON carrying that ID.
// It replaces fiber's DefaultErrorHandler, which echoes err.Error().
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	// A connection on which no head arrived in time is no request: a
	// browser's idle pre-connection ends that way.
	if c.Locals(requestKey) != nil || c.App() != s.app || errors.Is(err, fiber.ErrRequestTimeout) {
		return s.answerError(c, err)
	}
	// A head fasthttp could not parse comes here alone, before any
	// middleware: it gets a request ID, and after its answer the access
	// line and count every request has, route "invalid".
	r := &request{scheme: "http", client: remoteAddr(c), route: "invalid"}
	r.newID()
	c.Locals(requestKey, r)
	var fe *fiber.Error
	if errors.As(err, &fe) {
		// fasthttp quotes a request line it refuses ("invalid request uri
		// \"/_wxgate/callback?code=...\""): its query may carry a code.
		err = &fiber.Error{Code: fe.Code, Message: quotedQuery.ReplaceAllString(fe.Message, "?...")}
	}
	herr := s.answerError(c, err)
	status := c.Response().StatusCode()
	s.metrics.Request(r.route, status, 0)
	if s.log.Enabled(c.UserContext(), slog.LevelInfo) {
		s.accessLine(c, r, r.route, status, 0)
	}
	return herr
}

// quotedQuery is a query inside a Go-quoted string, up to its closing
// quote.
var quotedQuery = regexp.MustCompile(`\?(?:\\.|[^"\\])*`)

// answerError is handleError's answer to a request the middleware saw.
func (s *Server) answerError(c *fiber.Ctx, err error) error {
	e := classify(err)
	p := &problems[e.problem]
	r := requestOf(c)
	rid := r.id
	s.logError(c, e, p, rid)
	// Whatever an upstream had started to send is dropped.
	c.Response().Reset()
	if e.close || c.Request().IsBodyStream() {
		// A body nobody finished reading would be parsed as the next
		// request on this connection.
		c.Context().SetConnectionClose()
	}
	noStore(c)
	c.Set(fiber.HeaderXRequestID, rid)
	if e.retryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(e.retryAfter/time.Second)))
	}
	if e.location != "" {
		c.Set(fiber.HeaderLocation, e.location)
	}
	c.Status(p.status)
	if e.json || r.api || r.upgrade || wantsJSON(c) {
		desc := p.desc
		if preferredLang(c.Get(fiber.HeaderAcceptLanguage)) == "zh" {
			// A client that prefers Chinese reads it; one that names
			// neither language (none, "fr", "*") gets English, the JSON's
			// usual reader.
			if desc = descZh[p.desc]; desc == "" {
				desc = describe(p.page, "zh")
			}
		} else if desc == "" {
			desc = describe(p.page, "en")
		}
		body := fiber.Map{"error": p.code, "error_description": desc, "request_id": rid}
		if e.link != "" {
			body["login_url"] = e.link
		}
		if we := (*wechat.Error)(nil); errors.As(e.Err, &we) {
			body["errcode"] = we.Code
		}
		switch {
		case e.problem == problemInvalidToken || e.problem == problemTokenExpired:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="`+p.desc+`"`)
		case p.status == http.StatusUnauthorized:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="wxgate"`)
		}
		return c.JSON(body)
	}
	link, action := e.link, "retry"
	if link == "" && p.status >= http.StatusBadGateway && p.status <= http.StatusGatewayTimeout {
		link, action = retryLink(c), "again"
	}
	return s.renderMessage(c, p.page, link, action, rid)
}

// retryLink is the link that asks for the same page again after a 502, 503
// or 504: the request's own path and query, for GET and HEAD only (a link
// cannot repeat a POST), and only as a path on this origin.
func retryLink(c *fiber.Ctx) string {
	if m := c.Method(); m != http.MethodGet && m != http.MethodHead {
		return ""
	}
	u := c.OriginalURL()
	if !strings.HasPrefix(u, "/") || strings.HasPrefix(u, "//") || strings.HasPrefix(u, "/\\") || len(u) > maxReturnURL {
		return ""
	}
	return strings.Clone(u)
}

// logError logs an answered error: a 4xx is the client's doing and no
// error of the gateway's, so it is a debug line (its access line and, for
// a refusal, its auth line say the rest), unless WeChat refused what the
// user brought (a bad login code): a warning. A 5xx from WeChat or an
// upstream is a warning; any other 5xx (a store down, a bug) an error.
func (s *Server) logError(c *fiber.Ctx, e *Error, p *problemInfo, rid string) {
	level, msg := slog.LevelDebug, "request refused"
	var we *wechat.Error
	switch {
	case p.status < 500 && errors.As(e.Err, &we):
		level = slog.LevelWarn
	case p.status < 500:
	case e.problem == problemInternal || e.problem == problemUnavailable:
		level, msg = slog.LevelError, "request failed"
	default:
		level, msg = slog.LevelWarn, "request failed"
	}
	ctx := c.UserContext()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := [4]slog.Attr{
		slog.String("request_id", rid),
		slog.Int("status", p.status),
		slog.String("error", p.page),
	}
	n := 3
	if e.Err != nil {
		attrs[n] = slog.String("cause", e.Err.Error())
		n++
	}
	s.log.LogAttrs(ctx, level, msg, attrs[:n]...)
}

// isTokenError reports whether err is a bearer token's verification
// failure (as opposed to a store failure).
func isTokenError(err error) bool {
	return errors.Is(err, session.ErrInvalidToken) || errors.Is(err, session.ErrTokenExpired)
}

// isNotFound reports whether err means "no such session/state".
func isNotFound(err error) bool { return errors.Is(err, session.ErrNotFound) }

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
