package wechat

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// maxPause is the longest pause any failure sets (backoffMax, blockedFor).
// A pause said to end further ahead was set by a clock running ahead (a
// replica's, or this one's before it was stepped back) and is read as none:
// otherwise it would stop every fetch until that clock's time came.
const maxPause = max(backoffMax, blockedFor)

// pauseRecord is the shared pause between app token fetches.
type pauseRecord struct {
	// Failures in a row.
	Failures int `json:"failures"`
	// Life is the lifetime of the last token seen, which bounds the
	// backoff once that token is gone from the store.
	Life   time.Duration `json:"life"`
	Until  time.Time     `json:"until"`
	Reason string        `json:"reason"`
}

// failed pauses fetching on every replica after a failed call.
func (h *Holder) failed(ctx context.Context, now time.Time, cur *AppToken, err error) {
	if NeedsPerson(err) {
		_ = h.store.Set(ctx, h.key("blocked"), []byte(err.Error()), blockedFor)
		h.pauseHere(now.Add(blockedFor), fmt.Errorf("%w for %s: %s", ErrBlocked, h.app.AppID, err))
		return
	}
	var r pauseRecord
	if b, gerr := h.store.Get(ctx, h.key("backoff")); gerr == nil {
		_ = json.Unmarshal(b, &r)
	}
	if cur != nil {
		r.Life = cur.ExpiresAt.Sub(cur.FetchedAt)
	}
	r.Failures++
	r.Until = now.Add(backoff(r.Failures, r.Life))
	r.Reason = err.Error()
	h.pause(ctx, now, r)
}

// backoff is the pause after n failures in a row: exponential from one
// second with jitter, at most a minute. For a short-lived token both scale
// with its lifetime (a 400th and a 100th of it: 18 s and 72 s for WeChat's
// 2 hours, so the second-and-minute rule holds there), so that several
// attempts fit in the refresh window (a 25th of the lifetime) and a brief
// outage there never lets the token lapse.
func backoff(n int, life time.Duration) time.Duration {
	base, ceiling := backoffBase, backoffMax
	if life > 0 {
		base, ceiling = min(base, max(life/400, time.Millisecond)), min(ceiling, max(life/100, time.Millisecond))
	}
	// n comes from the shared store: clamped, so that no record can make
	// the shift negative (a panic).
	d := min(base<<min(max(n-1, 0), 20), ceiling)
	return d/2 + rand.N(d/2+1)
}

// pause shares r. It outlives r.Until so that the next failure carries on
// the schedule.
func (h *Holder) pause(ctx context.Context, now time.Time, r pauseRecord) {
	b, _ := json.Marshal(r)
	_ = h.store.Set(ctx, h.key("backoff"), b, r.Until.Sub(now)+backoffMax)
	h.pauseHere(r.Until, h.pauseError(r))
}

// resume ends the pause after a new token.
func (h *Holder) resume(ctx context.Context) {
	_ = h.store.Delete(ctx, h.key("backoff"))
	h.pauseHere(time.Time{}, nil)
}

func (h *Holder) pauseError(r pauseRecord) error {
	return fmt.Errorf("%w: fetching the app token of %s is paused until %s after: %s",
		ErrUnavailable, h.app.AppID, r.Until.UTC().Format(time.RFC3339), r.Reason)
}

// sharedPause returns why fetching is paused on every replica, or nil.
func (h *Holder) sharedPause(ctx context.Context, now time.Time) error {
	if b, err := h.store.Get(ctx, h.key("blocked")); err == nil {
		return fmt.Errorf("%w for %s: %s", ErrBlocked, h.app.AppID, b)
	}
	b, err := h.store.Get(ctx, h.key("backoff"))
	if err != nil {
		return nil
	}
	var r pauseRecord
	if json.Unmarshal(b, &r) != nil || !now.Before(r.Until) || r.Until.Sub(now) > maxPause {
		return nil
	}
	perr := h.pauseError(r)
	h.pauseHere(r.Until, perr)
	return perr
}

func (h *Holder) pauseHere(until time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pausedUntil, h.pausedErr = until, err
}

// localPause returns the pause this replica last saw, if it still runs.
func (h *Holder) localPause(now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Before(h.pausedUntil) && h.pausedUntil.Sub(now) <= maxPause {
		return h.pausedErr
	}
	return nil
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
