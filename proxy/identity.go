package proxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/policies"
	"github.com/wxgate/wxgate/session"
)

// caller is who a request comes from: a browser session or a bearer
// token's family.
type caller struct {
	id *session.Identity
	// holder keys the identity-assertion cache: "s:"+hash of the session ID
	// or "f:"+family ID. Never a raw session ID.
	holder string
	// tokens are the user's WeChat tokens, if the login holds them.
	tokens *session.Tokens
	// family is set for bearer callers.
	family *session.Family
}

// bearerToken returns the token of an "Authorization: Bearer" header (a
// copy), and whether the request carries a non-empty one. Authorization is
// a single field: with several, which one a parser takes is a guess, so a
// request with more than one that carries a bearer token gets an empty
// (invalid) token.
func bearerToken(c *fiber.Ctx) (string, bool) {
	all, bearer := bearerAuthorization(&c.Request().Header)
	switch {
	case !bearer:
		return "", false
	case len(all) > 1:
		return "", true
	}
	tok := parseBearer(string(all[0]))
	// An empty token ("Bearer " from a client with none yet) carries no
	// identity: the request is judged by its cookie, if any.
	return tok, tok != ""
}

// bearerAuthorization returns the request's Authorization values and
// whether one of them is a Bearer one.
func bearerAuthorization(h *fasthttp.RequestHeader) (all [][]byte, bearer bool) {
	all = h.PeekAll(fiber.HeaderAuthorization)
	for _, v := range all {
		bearer = bearer || isBearer(v)
	}
	return all, bearer
}

// isBearer reports whether an Authorization value uses the Bearer scheme:
// the scheme name in any case (RFC 9110 section 11.1), then the end or any
// byte that cannot continue a scheme name. Only a space is in the grammar,
// but lenient upstreams split "Bearer<TAB>token" and "Bearer<NBSP>token"
// too, so wxgate treats them as bearer tokens: to verify them and to
// remove them.
func isBearer(v []byte) bool {
	return len(v) >= 6 && strings.EqualFold(string(v[:6]), "bearer") && (len(v) == 6 || !isTokenChar(v[6]))
}

// parseBearer returns the token of a Bearer Authorization value.
func parseBearer(v string) string { return strings.TrimSpace(v[6:]) }

// currentCaller finds the caller of request c, r, and keeps it in r.who.
// A bearer token wins over a cookie. The caller's WeChat tokens may have
// expired while WeChat is down (requestTokens); its identity holds all the
// same. authErr is a bearer token's verification failure: the request then
// has no identity, and the failure is what a route that needs one answers.
// err is a store failure (503, never a logout).
func (s *Server) currentCaller(c *fiber.Ctx, r *request) (who *caller, authErr, err error) {
	ctx := c.UserContext()
	if tok, ok := bearerToken(c); ok {
		f, verr := s.issuer.Authenticate(ctx, tok)
		switch {
		case isTokenError(verr):
			return nil, verr, nil
		case verr != nil:
			return nil, nil, storeError(verr)
		}
		tokens := f.Tokens
		if s.needsRefresh(tokens, s.sessions.Now()) {
			tokens, err = s.requestTokens(ctx, s.familyRefreshable(f.ID, f.Identity.AppID, f.Tokens))
			if errors.Is(err, errLoginEnded) {
				// The app login is over at WeChat: the client logs in again.
				return nil, fmt.Errorf("%w: WeChat login ended", session.ErrInvalidToken), nil
			} else if err != nil {
				return nil, nil, err
			}
		}
		r.who = caller{id: &f.Identity, holder: "f:" + f.ID, tokens: tokens, family: f}
		return &r.who, nil, nil
	}
	sess, err := s.currentSession(c)
	if err != nil || sess == nil {
		return nil, nil, err
	}
	tokens := sess.Tokens
	if s.needsRefresh(tokens, s.sessions.Now()) {
		// Only then is the refreshable (closures) built: most requests
		// need no refresh.
		tokens, err = s.requestTokens(ctx, s.sessionRefreshable(sess.Key, sess.Identity.AppID, sess.Tokens))
		if errors.Is(err, errLoginEnded) {
			// WeChat ended the login: no session, so the request logs in
			// again (silently for snsapi_base) and comes back here.
			return nil, nil, nil
		} else if err != nil {
			return nil, nil, err
		}
	}
	r.who = caller{id: &sess.Identity, holder: "s:" + sess.Key, tokens: tokens}
	return &r.who, nil, nil
}

// policyIdentity is what policies needs to know of a caller.
func policyIdentity(who *caller) *policies.Identity {
	if who == nil {
		return nil
	}
	return &policies.Identity{OpenID: who.id.OpenID, UnionID: who.id.UnionID, Scope: routeScope(who.id.Scope)}
}
