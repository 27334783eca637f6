package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// AppToken is an app access token with its times.
type AppToken struct {
	AccessToken Secret    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	FetchedAt   time.Time `json:"fetched_at"`
	// RefreshAt is when a Holder starts replacing the token; zero in a
	// token shared by an older version (ExpiresAt less the window then).
	RefreshAt time.Time `json:"refresh_at,omitzero"`
}

// stableToken fetches the app access token through /cgi-bin/stable_token.
// force asks WeChat to invalidate the current token and issue a new one
// (limited to 20 a day, 30 s apart). now is the caller's clock. It is
// never retried: the Holder makes one call per attempt and paces attempts
// itself.
func (c *Client) stableToken(ctx context.Context, app App, force bool, now time.Time) (*AppToken, error) {
	body := map[string]any{
		"grant_type":    "client_credential",
		"appid":         app.AppID,
		"secret":        app.Secret.Reveal(),
		"force_refresh": force,
	}
	var out struct {
		AccessToken Secret `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := c.call(ctx, http.MethodPost, "/cgi-bin/stable_token", nil, body, false, &out); err != nil {
		return nil, fmt.Errorf("fetching stable token: %w", err)
	}
	if err := checkToken("/cgi-bin/stable_token", out.AccessToken, &out.ExpiresIn); err != nil {
		return nil, fmt.Errorf("fetching stable token: %w", err)
	}
	return &AppToken{AccessToken: out.AccessToken, ExpiresAt: now.Add(time.Duration(out.ExpiresIn) * time.Second), FetchedAt: now}, nil
}

// Token fetches the app access token through /cgi-bin/token. Every call
// issues a new token (the previous one lives 5 more minutes), so it is
// never retried.
func (c *Client) Token(ctx context.Context, app App, now time.Time) (*AppToken, error) {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {app.AppID}, "secret": {app.Secret.Reveal()}}
	var out struct {
		AccessToken Secret `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := c.call(ctx, http.MethodGet, "/cgi-bin/token", q, nil, false, &out); err != nil {
		return nil, fmt.Errorf("fetching app token: %w", err)
	}
	if err := checkToken("/cgi-bin/token", out.AccessToken, &out.ExpiresIn); err != nil {
		return nil, fmt.Errorf("fetching app token: %w", err)
	}
	return &AppToken{AccessToken: out.AccessToken, ExpiresAt: now.Add(time.Duration(out.ExpiresIn) * time.Second), FetchedAt: now}, nil
}

// SharedStore is where replicas share app tokens and the lease that lets
// exactly one of them fetch. session.Store satisfies it.
type SharedStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	Delete(ctx context.Context, key string) error
}

// IsAppTokenError reports whether err says the app access token was
// rejected (invalid, not the latest, or expired).
func IsAppTokenError(err error) bool {
	return HasCode(err, CodeInvalidCredential, CodeInvalidToken, CodeTokenExpired)
}
