package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// errLoginEnded means WeChat will not refresh the user's tokens any more
// (42002 refresh_token expired, 40030 invalid, or the tracked 30-day end
// passed): the login is over and the user logs in again.
var errLoginEnded = errors.New("proxy: WeChat login ended")

// errRefreshHeld means another replica holds the login's lease: it is
// refreshing the login, or the login is in backoff after a failure.
var errRefreshHeld = errors.New("proxy: another replica holds the refresh lease")

const (
	// refreshTimeout bounds one background refresh: the WeChat client's
	// attempts and the store writes around them.
	refreshTimeout = 30 * time.Second
	// snsLeaseTTL bounds how long one replica holds a login's lease while
	// it refreshes. Longer than refreshTimeout, so the lease never lapses
	// under a refresh still running; a replica that dies holding it delays
	// that login's next refresh by at most this.
	snsLeaseTTL = refreshTimeout + 10*time.Second
	// maxRefreshes bounds the background refreshes in flight in one
	// process; past it a request goes on with its tokens and a later one
	// starts the refresh.
	maxRefreshes = 64
	// sweepWorkers bounds the refreshes one sweep has in flight, so the
	// sweeper never takes more than this share of WeChat and the store.
	sweepWorkers = 4
	// heldPoll is how often a request waiting for another replica's
	// refresh rereads the login.
	heldPoll = 100 * time.Millisecond
)

// Lease states: what the holder of a login's RefreshLease is doing.
const (
	leaseRefreshing = "refreshing"
	leaseBackoff    = "backoff "
)

// refreshable is a login holding WeChat user tokens: a browser session or
// an app-login token family. Its funcs run in a background refresh, so they
// hold nothing of a request: only keys, and what reload read.
type refreshable struct {
	key   string // the lease and flight key: "s:"+session key or "f:"+family ID
	appID string
	// tokens are the tokens the caller found (read only).
	tokens *session.Tokens
	// reload re-reads the login (another request or replica may have
	// refreshed it); save stores new tokens; end finishes the login.
	reload func(ctx context.Context) (*session.Tokens, error)
	save   func(ctx context.Context, t *session.Tokens) error
	end    func(ctx context.Context) error
}

// refresher runs WeChat token refreshes in the background, one per login
// in this process.
type refresher struct {
	// ctx ends at Shutdown, and with it every refresh in flight.
	ctx  context.Context
	stop context.CancelFunc
	mu   sync.Mutex
	// flights are the refreshes in flight by refreshable.key; guarded by mu.
	flights map[string]*flight
	// closed is set by shut: no refresh starts after it (guarded by mu).
	closed bool
	// running counts the refresh goroutines, added to under mu while not
	// closed, so that shut can wait for them.
	running sync.WaitGroup
}

// shut stops starting refreshes, cuts those in flight, and waits until
// they have ended, or until ctx ends. A cut refresh releases its lease on
// its way out: were the store closed first, the lease would stay for
// snsLeaseTTL and hold back the other replicas' refresh of that login.
func (rf *refresher) shut(ctx context.Context) {
	rf.mu.Lock()
	rf.closed = true
	rf.mu.Unlock()
	rf.stop()
	done := make(chan struct{})
	go func() {
		rf.running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func newRefresher() *refresher {
	ctx, stop := context.WithCancel(context.Background())
	return &refresher{ctx: ctx, stop: stop, flights: map[string]*flight{}}
}

// flight is one refresh in flight.
type flight struct {
	done chan struct{}
	// tokens and err are its outcome, set before done is closed.
	tokens *session.Tokens
	err    error
}

// needsRefresh reports whether t is within the refresh margin of expiry.
func (s *Server) needsRefresh(t *session.Tokens, now time.Time) bool {
	return t != nil && t.ExpiresAt.Sub(now) < s.cfg.Session.RefreshMargin
}

// inBackoff reports whether t's login failed to refresh lately and must not
// be tried before t.RetryAt. A RetryAt further ahead than the longest pause
// was written by a clock running ahead (a replica's, or this one's before
// it was stepped back) and is read as none: otherwise the login would not
// refresh, and its expired token would not pass, until that clock's time.
func (s *Server) inBackoff(t *session.Tokens, now time.Time) bool {
	return t != nil && now.Before(t.RetryAt) && t.RetryAt.Sub(now) <= s.maxRefreshPause()
}

// requestTokens returns the WeChat tokens a request of login r uses (r.tokens
// are what it found). A valid token comes back at once, and if it is within
// the refresh margin its refresh starts in the background. Only an expired
// token waits, up to [session] refresh_wait, for its refresh; then it comes
// back as it is, expired: the identity still holds (forward refuses such
// tokens to pass_wechat_token routes). A login in backoff after a failed
// refresh is not tried again and does not wait. The only error is
// errLoginEnded (WeChat ended the login, which is then gone) or a store
// failure while ending it: an outage never ends a session (issue 9).
func (s *Server) requestTokens(ctx context.Context, r refreshable) (*session.Tokens, error) {
	t, now := r.tokens, s.sessions.Now()
	if !s.needsRefresh(t, now) {
		return t, nil
	}
	if !now.Before(t.RefreshExpiresAt) {
		// The tracked 30-day end: no WeChat call can help.
		return nil, s.endLogin(ctx, r, "refresh_expired")
	}
	if s.inBackoff(t, now) {
		return t, nil
	}
	f := s.startRefresh(r)
	wait := s.cfg.Session.Wait()
	if f == nil || now.Before(t.ExpiresAt) || wait <= 0 {
		return t, nil
	}
	// The wait is the request's own: the refresh goes on without it.
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-f.done:
	case <-timer.C:
		return t, nil
	case <-ctx.Done():
		return t, nil
	}
	switch {
	case errors.Is(f.err, errLoginEnded):
		return nil, errLoginEnded
	case f.err != nil || f.tokens == nil:
		return t, nil
	}
	return f.tokens, nil
}

// startRefresh returns r's refresh in flight in this process, starting it
// unless maxRefreshes are already in flight (then nil). The refresh runs
// on the refresher's context, never a request's.
func (s *Server) startRefresh(r refreshable) *flight {
	rf := s.refreshes
	rf.mu.Lock()
	if f, ok := rf.flights[r.key]; ok {
		rf.mu.Unlock()
		return f
	}
	if rf.closed {
		rf.mu.Unlock()
		return nil // shutting down: the request goes on with its tokens
	}
	if len(rf.flights) >= maxRefreshes {
		rf.mu.Unlock()
		s.refreshEvent("busy")
		return nil
	}
	f := &flight{done: make(chan struct{})}
	rf.flights[r.key] = f
	rf.running.Add(1)
	rf.mu.Unlock()
	go func() {
		defer rf.running.Done()
		ctx, cancel := context.WithTimeout(rf.ctx, refreshTimeout)
		defer cancel()
		f.tokens, f.err = s.refreshOnce(ctx, r)
		rf.mu.Lock()
		delete(rf.flights, r.key)
		rf.mu.Unlock()
		close(f.done)
	}()
	return f
}

// endLogin ends r's login, which WeChat will not refresh again, counting
// it as result: errLoginEnded, or the store's failure to end it.
func (s *Server) endLogin(ctx context.Context, r refreshable, result string) error {
	s.refreshEvent(result)
	if err := r.end(ctx); err != nil {
		return err
	}
	return errLoginEnded
}

// refreshOnce renews a login's WeChat access token if no replica holds its
// lease, and returns the tokens to use. A failure keeps the lease for a
// backoff pause, so no replica tries the login again before it.
func (s *Server) refreshOnce(ctx context.Context, r refreshable) (*session.Tokens, error) {
	lease := s.sessions.RefreshLease(r.key)
	won, err := lease.Take(ctx, leaseRefreshing, snsLeaseTTL)
	if err != nil {
		return nil, storeError(err)
	}
	if !won {
		return s.awaitHeld(ctx, r, lease)
	}
	release := true
	defer func() {
		if release {
			_ = lease.Release(context.WithoutCancel(ctx))
		}
	}()
	// Read under the lease: a replica that refreshed just before saved its
	// tokens before it let the lease go, so this never refreshes twice.
	cur, err := r.reload(ctx)
	if err != nil {
		return nil, err
	}
	now := s.sessions.Now()
	if !s.needsRefresh(cur, now) {
		return cur, nil // refreshed meanwhile
	}
	if !now.Before(cur.RefreshExpiresAt) {
		return nil, s.endLogin(ctx, r, "refresh_expired")
	}
	tok, err := s.wechat.RefreshUserToken(ctx, r.appID, cur.RefreshToken)
	switch {
	case wechat.HasCode(err, wechat.CodeRefreshExpired, wechat.CodeInvalidRefresh):
		return nil, s.endLogin(ctx, r, "ended")
	case err != nil && s.refreshes.ctx.Err() != nil:
		// Cut short by Shutdown: not WeChat's failure, so no backoff; the
		// lease goes, and another replica may refresh at once.
		return nil, fmt.Errorf("refresh sns token: %w", err)
	case err != nil:
		// -1, timeouts, 5xx (already retried by the client): keep the
		// session and its tokens, and back off.
		release = false
		pause := s.backOff(ctx, r, cur, lease, now)
		s.refreshEvent("error")
		s.log.LogAttrs(ctx, slog.LevelWarn, "refreshing a WeChat user token failed; keeping the session",
			slog.Int("failures", cur.Failures+1), slog.Duration("retry_in", pause), slog.Any("error", err))
		return nil, fmt.Errorf("refresh sns token: %w", err)
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
	s.refreshEvent("ok")
	return next, nil
}

// awaitHeld is a refresh that found the lease held by another replica. If
// that replica is refreshing and the caller's token has expired, a request
// may be waiting: reread the login until its new tokens are saved, within
// refresh_wait. Otherwise (a token still valid, a login in backoff) there
// is nothing to wait for.
func (s *Server) awaitHeld(ctx context.Context, r refreshable, lease session.Lease) (*session.Tokens, error) {
	wait := s.cfg.Session.Wait()
	if wait <= 0 || r.tokens == nil || s.sessions.Now().Before(r.tokens.ExpiresAt) {
		return nil, errRefreshHeld
	}
	if state, err := lease.State(ctx); err != nil || state != leaseRefreshing {
		return nil, errRefreshHeld
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, errRefreshHeld
		case <-time.After(heldPoll):
		}
		cur, err := r.reload(ctx)
		switch {
		case errors.Is(err, errLoginEnded):
			return nil, err
		case err != nil:
			return nil, errRefreshHeld
		case !s.needsRefresh(cur, s.sessions.Now()) || s.inBackoff(cur, s.sessions.Now()):
			return cur, nil
		}
	}
	return nil, errRefreshHeld
}

// backOff holds the login's lease for the pause after its failures in a
// row, so no replica tries it before, and records the failure with the
// tokens, so that requests and the sweeper skip the login without asking
// the store. It returns the pause.
func (s *Server) backOff(ctx context.Context, r refreshable, cur *session.Tokens, lease session.Lease, now time.Time) time.Duration {
	n := cur.Failures + 1
	pause := s.refreshPause(n)
	// The refresh may have used up its context waiting for WeChat.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := lease.Hold(ctx, leaseBackoff+strconv.Itoa(n), pause); err != nil {
		// The lease then lapses after snsLeaseTTL: a longer pause, never a
		// storm.
		s.log.LogAttrs(ctx, slog.LevelWarn, "holding a refresh lease for its backoff", slog.Any("error", err))
	}
	failed := *cur
	failed.Failures, failed.RetryAt = n, now.Add(pause)
	if err := r.save(ctx, &failed); err != nil && !errors.Is(err, errLoginEnded) {
		s.log.LogAttrs(ctx, slog.LevelWarn, "recording a failed refresh", slog.Any("error", err))
	}
	return pause
}

// refreshPause is the pause after the n-th failed refresh in a row:
// [session] refresh_backoff doubled per failure, at most 12 times it, give
// or take 20% so that logins that failed together do not retry together.
func (s *Server) refreshPause(n int) time.Duration {
	base := s.cfg.Session.RefreshBackoff
	// n comes from the stored login: clamped, so that no record can make
	// the shift negative (a panic, in a background goroutine).
	d := base << min(max(n-1, 0), 4) // 16x is past the cap
	d = min(d, 12*base)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// maxRefreshPause is the longest pause refreshPause returns.
func (s *Server) maxRefreshPause() time.Duration {
	return 12 * s.cfg.Session.RefreshBackoff * 12 / 10
}

// sessionRefreshable wraps the browser session stored under key, whose
// stored tokens are t.
func (s *Server) sessionRefreshable(key, appID string, t *session.Tokens) refreshable {
	// sess is what reload read, for save to write back; only the refresh's
	// goroutine touches it.
	var sess *session.Session
	return refreshable{
		key:    "s:" + key,
		appID:  appID,
		tokens: t,
		reload: func(ctx context.Context) (*session.Tokens, error) {
			fresh, err := s.sessions.GetByKey(ctx, key)
			if isNotFound(err) {
				return nil, errLoginEnded
			}
			if err != nil {
				return nil, storeError(err)
			}
			sess = fresh
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
			if err := s.sessions.DeleteByKey(ctx, key); err != nil {
				return storeError(err)
			}
			return nil
		},
	}
}

// familyRefreshable wraps the app-login token family id, whose stored
// tokens are t.
func (s *Server) familyRefreshable(id, appID string, t *session.Tokens) refreshable {
	return refreshable{
		key:    "f:" + id,
		appID:  appID,
		tokens: t,
		reload: func(ctx context.Context) (*session.Tokens, error) {
			fresh, err := s.issuer.Family(ctx, id)
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
			_, err := s.issuer.UpdateFamily(ctx, id, func(f *session.Family) { f.Tokens = t })
			switch {
			case isNotFound(err) || isTokenError(err):
				return errLoginEnded // revoked while WeChat answered
			case err != nil:
				return storeError(err)
			}
			return nil
		},
		end: func(ctx context.Context) error {
			if err := s.issuer.RevokeFamily(ctx, id); err != nil {
				return storeError(err)
			}
			return nil
		},
	}
}

// sweep refreshes, ahead of any request, the tokens of every session within
// the refresh margin ([session] refresh_ahead). It reads the sessions one
// at a time, in random order so that a sweep cut short by its budget (the
// sweep interval) skips different sessions each time, passes over those in
// backoff, and has at most sweepWorkers refreshes in flight. Every replica
// sweeps; the leases keep each refresh to one of them.
func (s *Server) sweep(ctx context.Context, budget time.Duration) {
	keys, err := s.sessions.WithTokens(ctx)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "refresh sweeper: listing sessions", slog.Any("error", err))
		return
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	end := time.Now().Add(budget)
	workers := make(chan struct{}, sweepWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, key := range keys {
		if ctx.Err() != nil || time.Now().After(end) {
			return
		}
		sess, err := s.sessions.GetByKey(ctx, key)
		if isNotFound(err) {
			_ = s.sessions.Forget(ctx, key)
			continue
		}
		now := s.sessions.Now()
		if err != nil || !s.needsRefresh(sess.Tokens, now) || s.inBackoff(sess.Tokens, now) {
			continue
		}
		select {
		case workers <- struct{}{}:
		case <-ctx.Done():
			return
		}
		f := s.startRefresh(s.sessionRefreshable(key, sess.Identity.AppID, sess.Tokens))
		if f == nil {
			<-workers // too many in flight: a later sweep
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-f.done:
			case <-ctx.Done():
			}
			<-workers
		}()
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
			s.sweep(ctx, interval)
		}
	}
}
