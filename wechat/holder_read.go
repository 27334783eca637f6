package wechat

import (
	"context"
	"fmt"
)

// readCall is one read of the shared token, answering every caller that
// joined it before it began.
type readCall struct {
	ctx  context.Context
	done chan struct{}
	t    *AppToken
	err  error
}

// read is current for Get's callers: one read of the shared store at a
// time on this replica, and a caller that arrives while one is under way
// joins the next, which begins once it ends. A burst of callers costs the
// store two reads, not one each: when a token expired, 300 callers on three
// replicas queued for Redis connections past the store's timeout, and
// callers that should have waited for the one fetch got 503. A caller never
// gets an answer read before it asked, so a token replaced just before (by
// Invalidate on another replica) is not served again.
func (h *Holder) read(ctx context.Context) (*AppToken, error) {
	h.rmu.Lock()
	if !h.reading {
		// No read under way: this caller reads for itself.
		h.reading = true
		h.rmu.Unlock()
		t, err := h.current(ctx)
		h.readsDone()
		return t, err
	}
	c := h.queued
	if c == nil {
		c = &readCall{ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		h.queued = c
	}
	h.rmu.Unlock()
	select {
	case <-c.done:
		return c.t, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("reading shared app token: %w", ctx.Err())
	}
}

// readsDone ends a read: the callers queued meanwhile get theirs.
func (h *Holder) readsDone() {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	if h.queued == nil {
		h.reading = false
		return
	}
	go h.readQueued()
}

// readQueued serves the queued reads one after another until none is
// queued.
func (h *Holder) readQueued() {
	for {
		h.rmu.Lock()
		c := h.queued
		h.queued = nil
		if c == nil {
			h.reading = false
			h.rmu.Unlock()
			return
		}
		h.rmu.Unlock()
		c.t, c.err = h.current(c.ctx)
		close(c.done)
	}
}
