package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// HolderConfig configures a Holder.
type HolderConfig struct {
	// Source is "stable_token" (default) or "token".
	Source string
	// Ahead is the longest time before expiry that a replacement is
	// fetched. The window used is min(Ahead, lifetime/25) of the token in
	// hand: stable_token issues a new token only in the last 5 minutes of
	// its 2 hours (1/24), and an old /cgi-bin/token lives 5 minutes after
	// a new one, so a window just inside that share gets a new token with
	// one call at any lifetime. Default 5m.
	Ahead time.Duration
	// Wait bounds how long a caller without a valid token waits for a
	// fetch, its own or another replica's. Default 2s.
	Wait time.Duration
	// IsNotFound reports whether a SharedStore error means "absent".
	IsNotFound func(error) bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnFetch, if set, hears every call to WeChat: the token (nil on
	// failure), the result ("ok", "forced", "unchanged", an errcode or
	// "unavailable") and err.
	OnFetch func(t *AppToken, result string, err error)
}

// Holder keeps one app's access token for every replica: it is fetched by
// one of them at a time (a lease in the shared store), refreshed ahead of
// expiry in the background while every caller keeps getting the current
// token, and replaced on a reported failure only if the failing token is
// still the current one. A failed fetch pauses fetching on every replica
// (exponential backoff with jitter, kept in the shared store), so a
// failing WeChat sees one call per pause, not one per request.
type Holder struct {
	client *Client
	app    App
	store  SharedStore
	cfg    HolderConfig
	group  singleflight.Group

	// mu guards the pause this replica last saw in the shared store, so
	// that requests during it cost neither the store nor WeChat anything.
	mu          sync.Mutex
	pausedUntil time.Time
	pausedErr   error
	// last is the token this replica last read or shared, served while
	// the shared store cannot be read (guarded by mu).
	last *AppToken

	// rmu guards the reads Get's callers share (see read): whether one is
	// under way, and the one that begins after it.
	rmu     sync.Mutex
	reading bool
	queued  *readCall
}

// Errors a Holder reports.
var (
	// ErrBlocked: fetching is paused after an errcode that needs a person
	// (BlockingCodes: 40164 IP whitelist, 45009 daily quota, 40125
	// secret, ...), so that it does not become a retry storm.
	ErrBlocked = errors.New("wechat: app token fetching is blocked")

	// errLeaseHeld: another replica is fetching.
	errLeaseHeld = errors.New("wechat: another replica is fetching the app token")
)

const (
	blockedFor  = time.Minute
	backoffBase = time.Second
	backoffMax  = time.Minute
	// leaseSlack is how much longer the lease lives than the one WeChat
	// call made under it, so that releasing it never removes a lease
	// another replica took after ours lapsed.
	leaseSlack = 5 * time.Second
	pollEvery  = 25 * time.Millisecond
)

// NewHolder returns the holder of app's token.
func NewHolder(c *Client, app App, store SharedStore, cfg HolderConfig) *Holder {
	if cfg.Source == "" {
		cfg.Source = "stable_token"
	}
	if cfg.Ahead == 0 {
		cfg.Ahead = 5 * time.Minute
	}
	if cfg.Wait == 0 {
		cfg.Wait = 2 * time.Second
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
	h.remember(&t)
	return &t, nil
}

// remember keeps t as the token last seen.
func (h *Holder) remember(t *AppToken) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = t
}

// lastValid returns the token last seen if it is still valid at now.
func (h *Holder) lastValid(now time.Time) *AppToken {
	h.mu.Lock()
	defer h.mu.Unlock()
	if valid(h.last, now) {
		return h.last
	}
	return nil
}

// Current returns the shared token without fetching; nil when there is
// none (for /readyz and metrics).
func (h *Holder) Current(ctx context.Context) (*AppToken, error) { return h.current(ctx) }

// window is how long before expiry a token that lives life is replaced
// (see HolderConfig.Ahead).
func (h *Holder) window(life time.Duration) time.Duration {
	if life <= 0 {
		return h.cfg.Ahead
	}
	return min(h.cfg.Ahead, life/25)
}

func valid(t *AppToken, now time.Time) bool { return t != nil && now.Before(t.ExpiresAt) }

// fresh reports whether t is valid and not yet due for replacement.
func (h *Holder) fresh(t *AppToken, now time.Time) bool {
	if !valid(t, now) {
		return false
	}
	due := t.RefreshAt
	if due.IsZero() {
		due = t.ExpiresAt.Add(-h.window(t.ExpiresAt.Sub(t.FetchedAt)))
	}
	return now.Before(due)
}

// Get returns a valid app access token. A token in its refresh window is
// returned at once and replaced in the background, so a failing WeChat
// never fails a caller the current token can serve; only a caller without
// a valid token waits, at most Wait. While the shared store cannot be read,
// the valid token this replica last saw is served.
func (h *Holder) Get(ctx context.Context) (*AppToken, error) {
	t, err := h.read(ctx)
	if err != nil {
		// The store is down: the token this replica last saw still works
		// at WeChat, and no fetch can take the lease anyway.
		if last := h.lastValid(h.cfg.Now()); last != nil {
			return last, nil
		}
		return nil, err
	}
	now := h.cfg.Now()
	if valid(t, now) {
		if !h.fresh(t, now) && h.localPause(now) == nil {
			h.group.DoChan("fetch", func() (any, error) { return h.fetch(context.WithoutCancel(ctx), false) })
		}
		return t, nil
	}
	return h.fetchNow(ctx, now)
}

// fetchNow fetches for a caller that has no valid token.
func (h *Holder) fetchNow(ctx context.Context, now time.Time) (*AppToken, error) {
	if err := h.localPause(now); err != nil {
		return nil, err
	}
	wait := time.NewTimer(h.cfg.Wait)
	defer wait.Stop()
	// The fetch runs on when this caller gives up: the next one gets it.
	ch := h.group.DoChan("fetch", func() (any, error) { return h.fetch(context.WithoutCancel(ctx), false) })
	select {
	case r := <-ch:
		if errors.Is(r.Err, errLeaseHeld) {
			return h.awaitOther(ctx, wait.C)
		}
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*AppToken), nil
	case <-wait.C:
		return nil, fmt.Errorf("%w: the app token of %s is still being fetched", ErrUnavailable, h.app.AppID)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the app token of %s: %w", h.app.AppID, ctx.Err())
	}
}

// awaitOther waits, until deadline, for the token another replica is
// fetching. The callers on this replica share one poll of the store (it
// runs for Wait from the first of them): a poll each was three store reads
// every 25 ms per caller.
func (h *Holder) awaitOther(ctx context.Context, deadline <-chan time.Time) (*AppToken, error) {
	ch := h.group.DoChan("await", func() (any, error) {
		wait := time.NewTimer(h.cfg.Wait)
		defer wait.Stop()
		return h.awaitShared(context.WithoutCancel(ctx), wait.C, "")
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*AppToken), nil
	case <-deadline:
		return nil, fmt.Errorf("%w: waiting for another replica to fetch the app token of %s", ErrUnavailable, h.app.AppID)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the app token of %s: %w", h.app.AppID, ctx.Err())
	}
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
		if errors.Is(err, errLeaseHeld) {
			wait := time.NewTimer(h.cfg.Wait)
			defer wait.Stop()
			nt, err = h.awaitShared(ctx, wait.C, token)
		}
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

// fetch makes one call to WeChat under the shared lease, unless fetching
// is paused or another replica holds the lease (errLeaseHeld).
func (h *Holder) fetch(ctx context.Context, force bool) (*AppToken, error) {
	won, err := h.store.SetNX(ctx, h.key("lease"), []byte{1}, h.client.timeout+leaseSlack)
	if err != nil {
		return nil, fmt.Errorf("taking the app token lease: %w", err)
	}
	if !won {
		return nil, errLeaseHeld
	}
	// Released after the pause is written, so no replica slips in between.
	defer func() { _ = h.store.Delete(ctx, h.key("lease")) }()
	now := h.cfg.Now()
	// Checked under the lease: the previous holder wrote its pause before
	// releasing it.
	if err := h.sharedPause(ctx, now); err != nil {
		return nil, err
	}
	cur, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	if !force && h.fresh(cur, now) {
		return cur, nil // another replica fetched between our read and the lease
	}
	forced := force && h.mayForce(ctx, now)
	if force && !forced && valid(cur, now) {
		// Past the forced-refresh limits the current token stands: a
		// stable_token call would only answer it again, and a /cgi-bin/token
		// call would replace it against a 2000-a-day quota whose end (45009)
		// blocks the app token, so a backend reporting every token it gets
		// cannot turn its own 40001s into WeChat calls.
		return cur, nil
	}
	t, err := h.call(ctx, forced, now)
	if err != nil {
		h.report(nil, resultLabel(err), err)
		h.failed(ctx, h.cfg.Now(), cur, err)
		return nil, err
	}
	return h.keep(ctx, now, cur, t, force, forced)
}

// call asks WeChat once: the pause between attempts is the Holder's.
func (h *Holder) call(ctx context.Context, forced bool, now time.Time) (*AppToken, error) {
	var t *AppToken
	var err error
	if h.cfg.Source == "token" {
		t, err = h.client.Token(ctx, h.app, now)
	} else {
		t, err = h.client.stableToken(ctx, h.app, forced, now)
	}
	if err != nil {
		return nil, err
	}
	// ExpiresAt counts from before the call, so it is never later than
	// WeChat's; the window counts from the answer, so that WeChat's own
	// window (stable_token's new token) has surely opened by then.
	life := t.ExpiresAt.Sub(now)
	t.RefreshAt = h.cfg.Now().Add(life - h.window(life))
	return t, nil
}

// keep shares a token WeChat answered.
func (h *Holder) keep(ctx context.Context, now time.Time, cur, t *AppToken, force, forced bool) (*AppToken, error) {
	unchanged := !force && cur != nil && t.AccessToken == cur.AccessToken
	if unchanged {
		// stable_token answers the token it has until its own window
		// opens: keep the lifetime we know, and ask again halfway to
		// expiry rather than on every request.
		t.FetchedAt = cur.FetchedAt
		t.RefreshAt = now.Add(t.ExpiresAt.Sub(now) / 2)
	}
	b, _ := json.Marshal(t)
	if err := h.store.Set(ctx, h.key("current"), b, t.ExpiresAt.Sub(now)); err != nil {
		return nil, fmt.Errorf("sharing app token: %w", err)
	}
	h.remember(t)
	_ = h.store.Delete(ctx, h.key("blocked"))
	result := "ok"
	h.resume(ctx)
	switch {
	case unchanged:
		result = "unchanged"
	case forced:
		result = "forced"
		h.noteForced(ctx, now)
	}
	h.report(t, result, nil)
	return t, nil
}

// awaitShared waits until the replica holding the lease shares a valid
// token other than stale, and gives up as soon as its fetch fails: a pause
// in force, or the lease released with neither a token nor a pause this
// replica's clock still sees (the holder's clock was behind, or its pause
// was written before this one moved on). Without the last, such a waiter
// waited its whole deadline for a fetch that had ended.
func (h *Holder) awaitShared(ctx context.Context, deadline <-chan time.Time, stale Secret) (*AppToken, error) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		select {
		case <-deadline:
			return nil, fmt.Errorf("%w: waiting for another replica to fetch the app token of %s", ErrUnavailable, h.app.AppID)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the app token of %s: %w", h.app.AppID, ctx.Err())
		case <-tick.C:
		}
		// Read before the token and the pause: the holder writes those
		// before it releases the lease, so a lease found gone means they
		// are there to read.
		held, err := h.leaseHeld(ctx)
		if err != nil {
			return nil, err
		}
		t, err := h.current(ctx)
		if err != nil {
			return nil, err
		}
		now := h.cfg.Now()
		if valid(t, now) && t.AccessToken != stale {
			return t, nil
		}
		if err := h.sharedPause(ctx, now); err != nil {
			return nil, err
		}
		if !held {
			return nil, fmt.Errorf("%w: another replica's fetch of the app token of %s ended without one", ErrUnavailable, h.app.AppID)
		}
	}
}

// leaseHeld reports whether a replica holds the fetch lease.
func (h *Holder) leaseHeld(ctx context.Context) (bool, error) {
	_, err := h.store.Get(ctx, h.key("lease"))
	switch {
	case err == nil:
		return true, nil
	case h.cfg.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("reading the app token lease: %w", err)
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

func (h *Holder) report(t *AppToken, result string, err error) {
	if h.cfg.OnFetch != nil {
		h.cfg.OnFetch(t, result, err)
	}
}
