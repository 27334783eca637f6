package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// Error is a failure with the answer the browser or API client gets. Handlers
// return it; handleError turns it (and every other error) into a response.
type Error struct {
	Status int
	// Page is the message shown to browsers (a key of messages).
	Page string
	// Code is the "error" member of the JSON answer (DESIGN.md "API clients").
	Code string
	// Err is the cause, logged with the error ID and never shown.
	Err error
	// Link, if set, is offered on the page (try again, log in).
	Link string
	// JSON forces a JSON answer; otherwise it follows Accept.
	JSON bool
	// RetryAfter, if set, is sent as Retry-After (429, 503).
	RetryAfter time.Duration
	// Close ends the connection after the answer: after a malformed request
	// nothing that follows on the connection can be trusted to start a new
	// one.
	Close bool
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Page + ": " + e.Err.Error()
	}
	return e.Page
}

func (e *Error) Unwrap() error { return e.Err }

// classify maps any error to the Error the client sees.
func classify(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case http.StatusNotFound:
			return &Error{Status: fe.Code, Page: "not_found", Code: "not_found", Err: err}
		case http.StatusMethodNotAllowed:
			return &Error{Status: fe.Code, Page: "bad_request", Code: "invalid_request", Err: err}
		case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
			return &Error{Status: fe.Code, Page: "bad_request", Code: "invalid_request", Err: err}
		}
		if fe.Code >= 400 && fe.Code < 500 {
			return &Error{Status: fe.Code, Page: "bad_request", Code: "invalid_request", Err: err}
		}
	}
	var we *wechat.Error
	switch {
	case errors.Is(err, session.ErrUnavailable):
		return storeError(err)
	case errors.Is(err, session.ErrTokenExpired):
		return &Error{Status: http.StatusUnauthorized, Page: "login_required", Code: "token_expired", Err: err, JSON: true}
	case errors.Is(err, session.ErrInvalidToken):
		return &Error{Status: http.StatusUnauthorized, Page: "login_required", Code: "invalid_token", Err: err, JSON: true}
	case errors.Is(err, session.ErrInvalidGrant):
		return &Error{Status: http.StatusUnauthorized, Page: "login_required", Code: "invalid_grant", Err: err, JSON: true}
	case errors.Is(err, wechat.ErrBadEncryptedData):
		return &Error{Status: http.StatusBadRequest, Page: "bad_request", Code: "invalid_request", Err: err, JSON: true}
	case errors.As(err, &we):
		return &Error{Status: http.StatusBadGateway, Page: "wechat_error", Code: "wechat_error", Err: err}
	case errors.Is(err, wechat.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Page: "wechat_unavailable", Code: "wechat_unavailable", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusServiceUnavailable, Page: "unavailable", Code: "unavailable", Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Page: "internal", Code: "server_error", Err: err}
}

// handleError is the one place errors become responses: it logs the detail
// with the request ID and sends a generic page or JSON carrying that ID.
// It replaces fiber's DefaultErrorHandler, which echoes err.Error().
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	e := classify(err)
	rid := requestID(c)
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	if s.log.Enabled(c.UserContext(), level) {
		s.log.LogAttrs(c.UserContext(), level, "request failed",
			slog.String("request_id", rid),
			slog.Int("status", e.Status),
			slog.String("error", e.Page),
			slog.Any("cause", e.Err))
	}
	// Whatever an upstream had started to send is dropped.
	c.Response().Reset()
	if e.Close || c.Request().IsBodyStream() {
		// A body nobody finished reading would be parsed as the next
		// request on this connection.
		c.Context().SetConnectionClose()
	}
	noStore(c)
	c.Set(fiber.HeaderXRequestID, rid)
	if e.RetryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(e.RetryAfter/time.Second)))
	}
	c.Status(e.Status)
	if e.JSON || wantsJSON(c) {
		desc := describeCode(e.Code)
		if desc == "" {
			desc = describe(e.Page, "en")
		}
		body := fiber.Map{"error": e.Code, "error_description": desc, "request_id": rid}
		if e.Link != "" {
			body["login_url"] = e.Link
		}
		if we := (*wechat.Error)(nil); errors.As(e.Err, &we) {
			body["errcode"] = we.Code
		}
		switch {
		case e.Code == "invalid_token" || e.Code == "token_expired":
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="`+describeCode(e.Code)+`"`)
		case e.Status == http.StatusUnauthorized:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="wxgate"`)
		}
		return c.JSON(body)
	}
	return s.renderMessage(c, e.Page, e.Link, rid)
}

// isTokenError reports whether err is a bearer token's verification
// failure (as opposed to a store failure).
func isTokenError(err error) bool {
	return errors.Is(err, session.ErrInvalidToken) || errors.Is(err, session.ErrTokenExpired)
}

// describeCode is the error_description of API error codes.
func describeCode(code string) string {
	switch code {
	case "token_expired":
		return "the access token has expired; refresh it"
	case "invalid_token":
		return "the access token is invalid"
	case "invalid_grant":
		return "the refresh token is invalid, expired, revoked or already used; log in again"
	case "invalid_request":
		return "the request is malformed"
	case "too_many_requests":
		return "too many logins were started from this network; try again in a few minutes"
	}
	return ""
}

// storeError is the answer when the session store fails: 503, never a
// logout.
func storeError(err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Page: "unavailable", Code: "unavailable", Err: err}
}

// isNotFound reports whether err means "no such session/state".
func isNotFound(err error) bool { return errors.Is(err, session.ErrNotFound) }
