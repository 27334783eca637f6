package proxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"

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

// bearerToken returns the token of an "Authorization: Bearer" header, and
// whether there was one.
func bearerToken(c *fiber.Ctx) (string, bool) {
	auth := c.Get(fiber.HeaderAuthorization)
	if len(auth) < 7 || !strings.EqualFold(auth[:7], "Bearer ") {
		return "", false
	}
	return strings.TrimSpace(auth[7:]), true
}

// currentCaller finds the caller of a request. A bearer token wins over a
// cookie. authErr is a bearer token's verification failure: the request
// then has no identity, and the failure is what a route that needs one
// answers. err is a store failure (503, never a logout).
func (s *Server) currentCaller(c *fiber.Ctx) (who *caller, authErr, err error) {
	if tok, ok := bearerToken(c); ok {
		f, verr := s.issuer.Authenticate(c.UserContext(), tok)
		switch {
		case verr == nil:
			tokens := f.Tokens
			if s.needsRefresh(tokens, s.sessions.Now()) {
				tokens, err = s.refreshTokens(c.UserContext(), s.familyRefreshable(f))
				if errors.Is(err, errLoginEnded) {
					// The app login is over at WeChat: the client logs in again.
					return nil, fmt.Errorf("%w: WeChat login ended", session.ErrInvalidToken), nil
				} else if err != nil {
					return nil, nil, err
				}
			}
			return &caller{id: &f.Identity, holder: "f:" + f.ID, tokens: tokens, family: f}, nil, nil
		case isTokenError(verr):
			return nil, verr, nil
		default:
			return nil, nil, storeError(verr)
		}
	}
	sess, err := s.currentSession(c)
	if err != nil || sess == nil {
		return nil, nil, err
	}
	if s.needsRefresh(sess.Tokens, s.sessions.Now()) {
		tokens, err := s.refreshTokens(c.UserContext(), s.sessionRefreshable(sess))
		if errors.Is(err, errLoginEnded) {
			// WeChat ended the login: no session, so the request logs in
			// again (silently for snsapi_base) and comes back here.
			return nil, nil, nil
		} else if err != nil {
			return nil, nil, err
		}
		sess.Tokens = tokens
	}
	return &caller{id: &sess.Identity, holder: "s:" + session.Hash(sess.ID), tokens: sess.Tokens}, nil, nil
}

// policyIdentity is what policies needs to know of a caller.
func policyIdentity(who *caller) *policies.Identity {
	if who == nil {
		return nil
	}
	scope := policies.Base
	switch who.id.Scope {
	case "snsapi_userinfo", "snsapi_login", "app":
		scope = policies.Userinfo
	}
	return &policies.Identity{OpenID: who.id.OpenID, UnionID: who.id.UnionID, Scope: scope}
}
