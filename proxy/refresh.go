package proxy

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// errLoginEnded means WeChat will not refresh the user's tokens any more
// (42002 refresh_token expired, 40030 invalid, or the tracked 30-day end
// passed): the login is over and the user logs in again.
var errLoginEnded = errors.New("proxy: WeChat login ended")

// snsLeaseTTL bounds how long one replica holds a session's refresh lease.
const snsLeaseTTL = 15 * time.Second

// refreshable is a login holding WeChat user tokens: a browser session or
// an app-login token family.
type refreshable struct {
	key    string // the lease and singleflight key
	appID  string
	tokens *session.Tokens
	// reload re-reads the login (another request or replica may have
	// refreshed it); save stores new tokens; end finishes the login.
	reload func(ctx context.Context) (*session.Tokens, error)
	save   func(ctx context.Context, t *session.Tokens) error
	end    func(ctx context.Context) error
}

// needsRefresh reports whether t is within the refresh margin of expiry.
func (s *Server) needsRefresh(t *session.Tokens, now time.Time) bool {
	return t != nil && t.ExpiresAt.Sub(now) < s.cfg.Session.RefreshMargin
}

// refreshTokens renews a login's WeChat access token: one refresh in
// flight per login in this process (singleflight) and, through a store
// lease, usually across replicas. It returns the tokens to use. Errors:
// errLoginEnded when WeChat ended the login; a store failure (503). A
// WeChat outage is not an error: the current tokens are kept and the next
// request tries again, so an outage never ends a session.
func (s *Server) refreshTokens(ctx context.Context, r refreshable) (*session.Tokens, error) {
	v, err, _ := s.refreshGroup.Do(r.key, func() (any, error) {
		// Not the caller's context: a client that hangs up must not abandon
		// a refresh that other requests wait on.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return s.refreshOnce(ctx, r)
	})
	if err != nil {
		return nil, err
	}
	return v.(*session.Tokens), nil
}

func (s *Server) refreshOnce(ctx context.Context, r refreshable) (*session.Tokens, error) {
	now := s.sessions.Now()
	cur, err := r.reload(ctx)
	if err != nil {
		return nil, err
	}
	if cur == nil || !s.needsRefresh(cur, now) {
		return cur, nil // refreshed meanwhile
	}
	if !now.Before(cur.RefreshExpiresAt) {
		s.metrics.Refresh("sns", "refresh_expired")
		if err := r.end(ctx); err != nil {
			return nil, err
		}
		return nil, errLoginEnded
	}
	lease := "lease:sns:" + r.key
	won, err := s.sessions.Store().SetNX(ctx, lease, []byte{1}, snsLeaseTTL)
	if err != nil {
		return nil, storeError(err)
	}
	if !won && now.Before(cur.ExpiresAt) {
		// Another replica is refreshing; this token still works meanwhile.
		return cur, nil
	}
	if won {
		defer func() { _ = s.sessions.Store().Delete(context.WithoutCancel(ctx), lease) }()
	}
	tok, err := s.wechat.RefreshUserToken(ctx, r.appID, cur.RefreshToken)
	switch {
	case wechat.HasCode(err, wechat.CodeRefreshExpired, wechat.CodeInvalidRefresh):
		s.metrics.Refresh("sns", "ended")
		if err := r.end(ctx); err != nil {
			return nil, err
		}
		return nil, errLoginEnded
	case err != nil:
		// -1, timeouts, 5xx (already retried with backoff by the client):
		// keep the session and its current tokens.
		s.metrics.Refresh("sns", "error")
		s.log.LogAttrs(ctx, slog.LevelWarn, "refreshing a WeChat user token failed; keeping the session", slog.Any("error", err))
		return cur, nil
	}
	next := &session.Tokens{
		AccessToken:      tok.AccessToken,
		ExpiresAt:        now.Add(time.Duration(tok.ExpiresIn) * time.Second),
		RefreshToken:     cur.RefreshToken,
		RefreshExpiresAt: cur.RefreshExpiresAt, // 30 days from the login; never extended
	}
	if tok.RefreshToken != "" {
		next.RefreshToken = tok.RefreshToken
	}
	if err := r.save(ctx, next); err != nil {
		return nil, err
	}
	s.metrics.Refresh("sns", "ok")
	return next, nil
}

// sessionRefreshable wraps a browser session for refreshTokens.
func (s *Server) sessionRefreshable(sess *session.Session) refreshable {
	return refreshable{
		key:    "s:" + sess.Key,
		appID:  sess.Identity.AppID,
		tokens: sess.Tokens,
		reload: func(ctx context.Context) (*session.Tokens, error) {
			fresh, err := s.sessions.GetByKey(ctx, sess.Key)
			if isNotFound(err) {
				return nil, errLoginEnded
			}
			if err != nil {
				return nil, storeError(err)
			}
			sess.Tokens = fresh.Tokens
			return fresh.Tokens, nil
		},
		save: func(ctx context.Context, t *session.Tokens) error {
			sess.Tokens = t
			if err := s.sessions.Update(ctx, sess); isNotFound(err) {
				// Logged out while WeChat answered: it stays logged out.
				return errLoginEnded
			} else if err != nil {
				return storeError(err)
			}
			return nil
		},
		end: func(ctx context.Context) error {
			if err := s.sessions.DeleteByKey(ctx, sess.Key); err != nil {
				return storeError(err)
			}
			return nil
		},
	}
}

// familyRefreshable wraps an app-login token family for refreshTokens.
func (s *Server) familyRefreshable(f *session.Family) refreshable {
	return refreshable{
		key:    "f:" + f.ID,
		appID:  f.Identity.AppID,
		tokens: f.Tokens,
		reload: func(ctx context.Context) (*session.Tokens, error) {
			fresh, err := s.issuer.Family(ctx, f.ID)
			if isNotFound(err) {
				return nil, errLoginEnded
			}
			if err != nil {
				return nil, storeError(err)
			}
			if fresh.Revoked {
				return nil, errLoginEnded
			}
			return fresh.Tokens, nil
		},
		save: func(ctx context.Context, t *session.Tokens) error {
			_, err := s.issuer.UpdateFamily(ctx, f.ID, func(f *session.Family) { f.Tokens = t })
			switch {
			case isNotFound(err) || isTokenError(err):
				return errLoginEnded // revoked while WeChat answered
			case err != nil:
				return storeError(err)
			}
			return nil
		},
		end: func(ctx context.Context) error {
			if err := s.issuer.RevokeFamily(ctx, f.ID); err != nil {
				return storeError(err)
			}
			return nil
		},
	}
}

// sweep refreshes, ahead of any request, the tokens of every session
// within the refresh margin ([session] refresh_ahead).
func (s *Server) sweep(ctx context.Context) {
	keys, err := s.sessions.WithTokens(ctx)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "refresh sweeper: listing sessions", slog.Any("error", err))
		return
	}
	now := s.sessions.Now()
	for _, key := range keys {
		if ctx.Err() != nil {
			return
		}
		sess, err := s.sessions.GetByKey(ctx, key)
		if isNotFound(err) {
			_ = s.sessions.Forget(ctx, key)
			continue
		}
		if err != nil || !s.needsRefresh(sess.Tokens, now) {
			continue
		}
		if _, err := s.refreshTokens(ctx, s.sessionRefreshable(sess)); err != nil && !errors.Is(err, errLoginEnded) {
			s.log.LogAttrs(ctx, slog.LevelWarn, "refresh sweeper", slog.Any("error", err))
		}
	}
}

// runSweeper sweeps every interval until ctx ends.
func (s *Server) runSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep(ctx)
		}
	}
}
