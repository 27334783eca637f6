package wechatsim

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"time"
)

// appTokens holds one app's access tokens: every token /cgi-bin/token issued
// that is still valid, and the stable_token pool.
type appTokens struct {
	issued map[string]time.Time // token -> expiry, both pools

	stable        string
	stableExpires time.Time
	lastForced    time.Time
	forcedDay     string
	forcedToday   int

	tokenDay   string
	tokenToday int
}

// tokensOf returns the token state of appID. Callers hold s.mu.
func (s *Server) tokensOf(appID string) *appTokens {
	t, ok := s.appTokens[appID]
	if !ok {
		t = &appTokens{issued: map[string]time.Time{}}
		s.appTokens[appID] = t
	}
	return t
}

// appTokenOwner validates an app access token and returns its appid.
// Callers hold s.mu.
func (s *Server) appTokenOwner(token string) (string, int) {
	if token == "" {
		return "", 41001
	}
	for appID, t := range s.appTokens {
		if exp, ok := t.issued[token]; ok {
			if !s.now().Before(exp) {
				return "", 42001
			}
			return appID, 0
		}
	}
	return "", 40001
}

// checkIP applies the app's IP whitelist. Callers hold s.mu.
func checkIP(a *App, r *http.Request) int {
	if len(a.IPWhitelist) == 0 {
		return 0
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if slices.Contains(a.IPWhitelist, host) {
		return 0
	}
	return 40164
}

func (s *Server) cgiToken(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.Get("grant_type") != "client_credential" {
		return nil, 40002
	}
	a, e := s.checkApp(q.Get("appid"), q.Get("secret"), true)
	if e != 0 {
		return nil, e
	}
	if e := checkIP(a, r); e != 0 {
		return nil, e
	}
	now := s.now()
	t := s.tokensOf(a.AppID)
	day := now.Format(time.DateOnly)
	if t.tokenDay != day {
		t.tokenDay, t.tokenToday = day, 0
	}
	if t.tokenToday >= tokenPerDay {
		return nil, 45009
	}
	t.tokenToday++
	// Every call issues a new token; the ones before stay valid 5 more minutes.
	for tok, exp := range t.issued {
		if grace := s.early(oldTokenGrace); tok != t.stable && exp.After(now.Add(grace)) {
			t.issued[tok] = now.Add(grace)
		}
	}
	tok := accessTokenString()
	t.issued[tok] = now.Add(s.lifetimes.AppAccessToken)
	return map[string]any{"access_token": tok, "expires_in": int(s.lifetimes.AppAccessToken / time.Second)}, 0
}

func (s *Server) stableToken(r *http.Request) (any, int) {
	if r.Method != http.MethodPost {
		return nil, 43002
	}
	var body struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, 40002
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if body.GrantType != "client_credential" {
		return nil, 40002
	}
	a, e := s.checkApp(body.AppID, body.Secret, true)
	if e != 0 {
		return nil, e
	}
	if e := checkIP(a, r); e != 0 {
		return nil, e
	}
	now := s.now()
	t := s.tokensOf(a.AppID)
	day := now.Format(time.DateOnly)
	if t.forcedDay != day {
		t.forcedDay, t.forcedToday = day, 0
	}
	valid := t.stable != "" && now.Before(t.stableExpires)
	switch {
	case body.ForceRefresh && t.forcedToday < forcePerDay && now.Sub(t.lastForced) >= forceInterval:
		// Forced: invalidate the current token and issue a new one.
		t.forcedToday++
		t.lastForced = now
		delete(t.issued, t.stable)
		valid = false
	case body.ForceRefresh:
		// Over the forced limits: the current token comes back unchanged.
	case valid && t.stableExpires.Sub(now) > s.early(stableEarly):
		// Normal mode returns the same token while it is valid.
	default:
		// WeChat rotates stable tokens 5 minutes early; the old one keeps
		// its own expiry.
		valid = false
	}
	if !valid {
		t.stable = accessTokenString()
		t.stableExpires = now.Add(s.lifetimes.AppAccessToken)
		t.issued[t.stable] = t.stableExpires
	}
	return map[string]any{
		"access_token": t.stable,
		"expires_in":   int(t.stableExpires.Sub(now) / time.Second),
	}, 0
}

// ExpireAppTokens ends every app access token of appID now, as if they had
// lapsed. Tests use it to force a refresh.
func (s *Server) ExpireAppTokens(appID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokensOf(appID)
	now := s.now()
	for tok := range t.issued {
		t.issued[tok] = now
	}
	t.stableExpires = now
}

// early scales one of WeChat's 5-minute windows to the app token lifetime
// in use, so that a test's short lifetime keeps WeChat's proportions
// (5 minutes of 2 hours).
func (s *Server) early(d time.Duration) time.Duration {
	return min(d, time.Duration(float64(d)*float64(s.lifetimes.AppAccessToken)/float64(appTokenTTL)))
}
