package wechat

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// AppToken is an app access token with its expiry.
type AppToken struct {
	AccessToken Secret
	ExpiresAt   time.Time
}

// StableToken fetches the app access token through /cgi-bin/stable_token.
// force asks WeChat to invalidate the current token and issue a new one
// (limited to 20 a day, 30 s apart).
func (c *Client) StableToken(ctx context.Context, app App, force bool) (*AppToken, error) {
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
	start := time.Now()
	// Normal mode is idempotent (it returns the current token); a forced
	// refresh is not.
	if err := c.call(ctx, http.MethodPost, "/cgi-bin/stable_token", nil, body, !force, &out); err != nil {
		return nil, fmt.Errorf("fetching stable token: %w", err)
	}
	return &AppToken{AccessToken: out.AccessToken, ExpiresAt: start.Add(time.Duration(out.ExpiresIn) * time.Second)}, nil
}

// AppTokens keeps one app access token per app in memory, fetching it once
// for all concurrent callers and again shortly before it expires.
type AppTokens struct {
	client *Client
	app    App
	// ahead is how long before expiry a token is replaced.
	ahead time.Duration
	group singleflight.Group

	// mu protects cur.
	mu  sync.Mutex
	cur *AppToken
}

// NewAppTokens returns a holder of app's access token.
func NewAppTokens(c *Client, app App) *AppTokens {
	return &AppTokens{client: c, app: app, ahead: 5 * time.Minute}
}

// Get returns a valid app access token, fetching one if needed.
func (h *AppTokens) Get(ctx context.Context) (Secret, error) {
	h.mu.Lock()
	cur := h.cur
	h.mu.Unlock()
	if cur != nil && time.Until(cur.ExpiresAt) > h.ahead {
		return cur.AccessToken, nil
	}
	v, err, _ := h.group.Do("fetch", func() (any, error) {
		t, err := h.client.StableToken(context.WithoutCancel(ctx), h.app, false)
		if err != nil {
			return nil, err
		}
		h.mu.Lock()
		h.cur = t
		h.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return "", err
	}
	return v.(*AppToken).AccessToken, nil
}

// Invalidate drops token if it is still the current one, so that the next
// Get fetches anew (compare-and-invalidate: a stale report of an old token
// changes nothing).
func (h *AppTokens) Invalidate(token Secret) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur != nil && h.cur.AccessToken == token {
		h.cur = nil
	}
}

// IsAppTokenError reports whether err says the app access token was
// rejected (invalid, not the latest, or expired).
func IsAppTokenError(err error) bool {
	return HasCode(err, CodeInvalidCredential, CodeInvalidToken, CodeTokenExpired)
}
