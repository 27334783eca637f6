package wechatsim

import (
	"net/http"
	"time"
)

// userToken is an sns access_token.
type userToken struct {
	appID    string
	user     string
	openID   string
	scope    string
	expires  time.Time
	snapshot bool
}

// refreshToken is an sns refresh_token; it lives 30 days and is never extended.
type refreshToken struct {
	appID    string
	user     string
	openID   string
	scope    string
	expires  time.Time
	access   string // the access_token it last issued
	snapshot bool
}

// checkApp validates appid and secret the way the token endpoints do.
// Callers hold s.mu.
func (s *Server) checkApp(appID, secret string, needSecret bool) (*App, int) {
	if appID == "" {
		return nil, 41002
	}
	if needSecret && secret == "" {
		return nil, 41004
	}
	a, ok := s.apps[appID]
	if !ok {
		return nil, 40013
	}
	if needSecret && secret != a.Secret {
		return nil, 40125
	}
	return a, 0
}

// redeem validates and consumes a code of the given kind for app. A code
// that was already used answers 40163; any other bad code, 40029.
// Callers hold s.mu.
func (s *Server) redeem(appID, value string, kind codeKind) (*code, int) {
	c, ok := s.codes[value]
	if !ok || c.kind != kind || c.appID != appID || !s.now().Before(c.expires) {
		return nil, 40029
	}
	if c.used {
		return nil, 40163
	}
	c.used = true
	return c, 0
}

func (s *Server) snsAccessToken(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, e := s.checkApp(q.Get("appid"), q.Get("secret"), true)
	if e != 0 {
		return nil, e
	}
	if q.Get("code") == "" {
		return nil, 41008
	}
	if q.Get("grant_type") != "authorization_code" {
		return nil, 40002
	}
	if a.Type == MiniProgram {
		return nil, 40013
	}
	c, e := s.redeem(a.AppID, q.Get("code"), oauthCode)
	if e != 0 {
		return nil, e
	}
	user := c.user
	if c.snapshot {
		// Snapshot pages give a virtual identity (WECHAT-API.md section 1).
		user = "snapshot:" + user
	}
	openID := s.openID(a.AppID, user)
	now := s.now()
	at := accessTokenString()
	rt := accessTokenString()
	s.userTokens[at] = &userToken{appID: a.AppID, user: user, openID: openID, scope: c.scope, expires: now.Add(s.lifetimes.SNSAccessToken), snapshot: c.snapshot}
	s.refreshTokens[rt] = &refreshToken{appID: a.AppID, user: user, openID: openID, scope: c.scope, expires: now.Add(s.lifetimes.RefreshToken), access: at, snapshot: c.snapshot}
	out := map[string]any{
		"access_token":  at,
		"expires_in":    int(s.lifetimes.SNSAccessToken / time.Second),
		"refresh_token": rt,
		"openid":        openID,
		"scope":         c.scope,
	}
	if u := s.unionID(a, user); u != "" {
		out["unionid"] = u
	}
	if c.snapshot {
		out["is_snapshotuser"] = 1
	}
	return out, 0
}

func (s *Server) snsRefreshToken(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, e := s.checkApp(q.Get("appid"), "", false)
	if e != 0 {
		return nil, e
	}
	if q.Get("grant_type") != "refresh_token" {
		return nil, 40002
	}
	v := q.Get("refresh_token")
	if v == "" {
		return nil, 41003
	}
	rt, ok := s.refreshTokens[v]
	if !ok || rt.appID != a.AppID {
		return nil, 40030
	}
	now := s.now()
	if !now.Before(rt.expires) {
		return nil, 42002
	}
	at, ok := s.userTokens[rt.access]
	if ok && now.Before(at.expires) {
		// Still valid: the same token with a renewed expiry.
		at.expires = now.Add(s.lifetimes.SNSAccessToken)
	} else {
		delete(s.userTokens, rt.access)
		rt.access = accessTokenString()
		s.userTokens[rt.access] = &userToken{appID: a.AppID, user: rt.user, openID: rt.openID, scope: rt.scope, expires: now.Add(s.lifetimes.SNSAccessToken), snapshot: rt.snapshot}
	}
	return map[string]any{
		"access_token":  rt.access,
		"expires_in":    int(s.lifetimes.SNSAccessToken / time.Second),
		"refresh_token": v,
		"openid":        rt.openID,
		"scope":         rt.scope,
	}, 0
}

// userTokenFor validates an sns access_token for openid. Callers hold s.mu.
func (s *Server) userTokenFor(token, openID string) (*userToken, int) {
	if token == "" {
		return nil, 41001
	}
	t, ok := s.userTokens[token]
	if !ok {
		return nil, 40001
	}
	if !s.now().Before(t.expires) {
		return nil, 42001
	}
	if openID != t.openID {
		return nil, 40003
	}
	return t, 0
}

func (s *Server) snsUserInfo(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	t, e := s.userTokenFor(q.Get("access_token"), q.Get("openid"))
	if e != 0 {
		return nil, e
	}
	if t.scope != "snsapi_userinfo" && t.scope != "snsapi_login" || t.snapshot {
		return nil, 48001
	}
	a := s.apps[t.appID]
	out := map[string]any{
		"openid":     t.openID,
		"nickname":   Nickname(t.user),
		"sex":        0, // everyone since late 2021
		"province":   "",
		"city":       "",
		"country":    "",
		"headimgurl": avatarURL(t.openID),
		"privilege":  []string{},
	}
	if u := s.unionID(a, t.user); u != "" {
		out["unionid"] = u
	}
	return out, 0
}

func (s *Server) snsAuth(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	// /sns/auth answers only 40003 (not this user's valid token) or 42001
	// (expired), whatever is wrong with the token (WECHAT-API.md section 3).
	switch _, e := s.userTokenFor(q.Get("access_token"), q.Get("openid")); e {
	case 0:
		return map[string]any{"errcode": 0, "errmsg": "ok"}, 0
	case 42001:
		return nil, 42001
	default:
		return nil, 40003
	}
}
