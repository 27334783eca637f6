package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/sync/singleflight"
)

// AppToken is an app access token with its times.
type AppToken struct {
	AccessToken Secret    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	FetchedAt   time.Time `json:"fetched_at"`
}

// StableToken fetches the app access token through /cgi-bin/stable_token.
// force asks WeChat to invalidate the current token and issue a new one
// (limited to 20 a day, 30 s apart). now is the caller's clock.
func (c *Client) StableToken(ctx context.Context, app App, force bool, now time.Time) (*AppToken, error) {
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
	// Normal mode is idempotent (it returns the current token); a forced
	// refresh is not.
	if err := c.call(ctx, http.MethodPost, "/cgi-bin/stable_token", nil, body, !force, &out); err != nil {
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

// HolderConfig configures a Holder.
type HolderConfig struct {
	// Source is "stable_token" (default) or "token".
	Source string
	// Ahead is how long before expiry a replacement is fetched. Default 5m.
	Ahead time.Duration
	// IsNotFound reports whether a SharedStore error means "absent".
	IsNotFound func(error) bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnFetch, if set, hears every fetch: the token (nil on failure), the
	// result ("ok", "forced", "lease_lost_wait", or an errcode) and err.
	OnFetch func(t *AppToken, result string, err error)
}

// Holder keeps one app's access token for every replica: it is fetched by
// exactly one of them (a lease in the shared store), refreshed ahead of
// expiry while the others keep serving the current token, and replaced on a
// reported failure only if the failing token is still the current one.
type Holder struct {
	client *Client
	app    App
	store  SharedStore
	cfg    HolderConfig
	group  singleflight.Group
}

// Errors a Holder reports.
var (
	// ErrBlocked: fetching is paused after an errcode that needs a person
	// (40164 IP whitelist, 45009 daily quota, 40125 secret), so that it
	// does not become a retry storm.
	ErrBlocked = errors.New("wechat: app token fetching is blocked")
)

const (
	leaseTTL   = 15 * time.Second
	blockedFor = time.Minute
	leaseWait  = 10 * time.Second
)

// NewHolder returns the holder of app's token.
func NewHolder(c *Client, app App, store SharedStore, cfg HolderConfig) *Holder {
	if cfg.Source == "" {
		cfg.Source = "stable_token"
	}
	if cfg.Ahead == 0 {
		cfg.Ahead = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IsNotFound == nil {
		cfg.IsNotFound = func(error) bool { return false }
	}
	return &Holder{client: c, app: app, store: store, cfg: cfg}
}

// AppID is the holder's app.
func (h *Holder) AppID() string { return h.app.AppID }

func (h *Holder) key(kind string) string { return "apptoken:" + kind + ":" + h.app.AppID }

// current reads the shared token; nil when there is none.
func (h *Holder) current(ctx context.Context) (*AppToken, error) {
	b, err := h.store.Get(ctx, h.key("current"))
	if err != nil {
		if h.cfg.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading shared app token: %w", err)
	}
	var t AppToken
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, nil // unreadable: fetch a new one
	}
	return &t, nil
}

// Current returns the shared token without fetching; nil when there is
// none (for /readyz and metrics).
func (h *Holder) Current(ctx context.Context) (*AppToken, error) { return h.current(ctx) }

// Get returns a valid app access token, fetching one when there is none or
// it is within Ahead of expiry.
func (h *Holder) Get(ctx context.Context) (*AppToken, error) {
	now := h.cfg.Now()
	t, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	if t != nil && t.ExpiresAt.Sub(now) > h.cfg.Ahead {
		return t, nil
	}
	v, err, _ := h.group.Do("get", func() (any, error) {
		return h.fetch(context.WithoutCancel(ctx), false)
	})
	if err != nil {
		return nil, err
	}
	return v.(*AppToken), nil
}

// Invalidate reports that WeChat rejected token (40001, 40014, 42001). If it
// is still the current token, a new one is fetched with force_refresh
// (within WeChat's limits) and refreshed reports true; a report of an older
// token changes nothing.
func (h *Holder) Invalidate(ctx context.Context, token Secret) (t *AppToken, refreshed bool, err error) {
	v, err, _ := h.group.Do("invalidate:"+token.Reveal(), func() (any, error) {
		ctx := context.WithoutCancel(ctx)
		cur, err := h.current(ctx)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.AccessToken != token {
			return invalidated{t: cur}, nil // stale report: someone already replaced it
		}
		nt, err := h.fetch(ctx, true)
		if err != nil {
			return nil, err
		}
		return invalidated{t: nt, refreshed: nt.AccessToken != token}, nil
	})
	if err != nil {
		return nil, false, err
	}
	r := v.(invalidated)
	if r.t == nil {
		r.t, err = h.Get(ctx)
	}
	return r.t, r.refreshed, err
}

type invalidated struct {
	t         *AppToken
	refreshed bool
}

// fetch gets a token from WeChat under the shared lease, or, when another
// replica holds the lease, waits for the token it writes.
func (h *Holder) fetch(ctx context.Context, force bool) (*AppToken, error) {
	if b, err := h.store.Get(ctx, h.key("blocked")); err == nil {
		return nil, fmt.Errorf("%w for %s: %s", ErrBlocked, h.app.AppID, b)
	}
	won, err := h.store.SetNX(ctx, h.key("lease"), []byte{1}, leaseTTL)
	if err != nil {
		return nil, fmt.Errorf("taking the app token lease: %w", err)
	}
	if !won {
		return h.waitForHolder(ctx, force)
	}
	defer func() { _ = h.store.Delete(ctx, h.key("lease")) }()
	// Someone may have fetched between our read and the lease.
	if cur, err := h.current(ctx); err == nil && cur != nil && !force && cur.ExpiresAt.Sub(h.cfg.Now()) > h.cfg.Ahead {
		return cur, nil
	}
	now := h.cfg.Now()
	forced := force && h.mayForce(ctx, now)
	var t *AppToken
	switch h.cfg.Source {
	case "token":
		t, err = h.client.Token(ctx, h.app, now)
	default:
		t, err = h.client.StableToken(ctx, h.app, forced, now)
	}
	if err != nil {
		h.report(nil, resultLabel(err), err)
		if HasCode(err, CodeIPNotWhitelisted, CodeDailyQuota, CodeInvalidSecret) {
			_ = h.store.Set(ctx, h.key("blocked"), []byte(err.Error()), blockedFor)
		}
		return nil, err
	}
	_ = h.store.Delete(ctx, h.key("blocked"))
	b, _ := json.Marshal(t)
	if err := h.store.Set(ctx, h.key("current"), b, t.ExpiresAt.Sub(now)); err != nil {
		return nil, fmt.Errorf("sharing app token: %w", err)
	}
	result := "ok"
	if forced {
		result = "forced"
		h.noteForced(ctx, now)
	}
	h.report(t, result, nil)
	return t, nil
}

// waitForHolder waits for the replica holding the lease to share a token.
// A token that is still valid is served at once: WeChat keeps the old one
// valid for 5 minutes after a new one is issued.
func (h *Holder) waitForHolder(ctx context.Context, force bool) (*AppToken, error) {
	deadline := time.NewTimer(leaseWait)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	start, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	if !force && start != nil && h.cfg.Now().Before(start.ExpiresAt) {
		return start, nil
	}
	for {
		select {
		case <-deadline.C:
			return nil, fmt.Errorf("%w: waiting for the app token of %s", ErrUnavailable, h.app.AppID)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		t, err := h.current(ctx)
		if err != nil {
			return nil, err
		}
		if t != nil && h.cfg.Now().Before(t.ExpiresAt) && (start == nil || t.AccessToken != start.AccessToken) {
			return t, nil
		}
		if b, err := h.store.Get(ctx, h.key("blocked")); err == nil {
			return nil, fmt.Errorf("%w for %s: %s", ErrBlocked, h.app.AppID, b)
		}
	}
}

// forceRecord tracks force_refresh use against WeChat's limits.
type forceRecord struct {
	Day   string    `json:"day"`
	Count int       `json:"count"`
	Last  time.Time `json:"last"`
}

// mayForce reports whether a force_refresh stays within 20 a day and 30 s
// apart.
func (h *Holder) mayForce(ctx context.Context, now time.Time) bool {
	var r forceRecord
	if b, err := h.store.Get(ctx, h.key("forced")); err == nil {
		_ = json.Unmarshal(b, &r)
	}
	if r.Day != now.Format(time.DateOnly) {
		return true
	}
	return r.Count < 20 && now.Sub(r.Last) >= 30*time.Second
}

func (h *Holder) noteForced(ctx context.Context, now time.Time) {
	var r forceRecord
	if b, err := h.store.Get(ctx, h.key("forced")); err == nil {
		_ = json.Unmarshal(b, &r)
	}
	if day := now.Format(time.DateOnly); r.Day != day {
		r = forceRecord{Day: day}
	}
	r.Count++
	r.Last = now
	b, _ := json.Marshal(r)
	_ = h.store.Set(ctx, h.key("forced"), b, 25*time.Hour)
}

func (h *Holder) report(t *AppToken, result string, err error) {
	if h.cfg.OnFetch != nil {
		h.cfg.OnFetch(t, result, err)
	}
}

// Blocked returns why fetching is paused, or "" when it is not.
func (h *Holder) Blocked(ctx context.Context) string {
	b, err := h.store.Get(ctx, h.key("blocked"))
	if err != nil {
		return ""
	}
	return string(b)
}

// IsAppTokenError reports whether err says the app access token was
// rejected (invalid, not the latest, or expired).
func IsAppTokenError(err error) bool {
	return HasCode(err, CodeInvalidCredential, CodeInvalidToken, CodeTokenExpired)
}
