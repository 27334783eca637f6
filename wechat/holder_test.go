package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

func newHolder(t *testing.T, source string) (*wechat.Holder, *wechatsim.Server, *time.Time) {
	t.Helper()
	sim := wechatsim.New(wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	now := time.Now()
	h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: srv.URL}), wechat.App{AppID: oaID, Secret: oaSecret},
		session.NewMemory(0), wechat.HolderConfig{
			Source:     source,
			IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
			Now:        func() time.Time { return now },
		})
	return h, sim, &now
}

func TestHolderSources(t *testing.T) {
	for _, tc := range []struct{ source, path string }{
		{"stable_token", "/cgi-bin/stable_token"},
		{"token", "/cgi-bin/token"},
	} {
		t.Run(tc.source, func(t *testing.T) {
			h, sim, now := newHolder(t, tc.source)
			ctx := context.Background()
			var wg sync.WaitGroup
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := h.Get(ctx); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if n := sim.Calls()[tc.path]; n != 1 {
				t.Errorf("%s calls = %d, want 1", tc.path, n)
			}
			t1, _ := h.Get(ctx)
			// Within 5 minutes of expiry the current token is served while
			// a new one is fetched in the background.
			*now = now.Add(2*time.Hour - 4*time.Minute)
			sim.Advance(2*time.Hour - 4*time.Minute)
			if t2, err := h.Get(ctx); err != nil || t2.AccessToken != t1.AccessToken {
				t.Fatalf("ahead of expiry: %v, %v; want the current token at once", t2, err)
			}
			t2 := waitFor(t, func() *wechat.AppToken {
				cur, _ := h.Current(ctx)
				return cur
			}, func(cur *wechat.AppToken) bool { return cur.AccessToken != t1.AccessToken })
			if got, err := h.Get(ctx); err != nil || got.AccessToken != t2.AccessToken || sim.Calls()[tc.path] != 2 {
				t.Errorf("after the refresh: %v, calls %d; want the new token, 2 calls", err, sim.Calls()[tc.path])
			}
		})
	}
}

func TestHolderInvalidate(t *testing.T) {
	h, sim, _ := newHolder(t, "stable_token")
	ctx := context.Background()
	old, _ := h.Get(ctx)
	t2, refreshed, err := h.Invalidate(ctx, old.AccessToken)
	if err != nil || !refreshed || t2.AccessToken == old.AccessToken {
		t.Fatalf("Invalidate(current) = %v, %v", refreshed, err)
	}
	t3, refreshed, err := h.Invalidate(ctx, old.AccessToken)
	if err != nil || refreshed || t3.AccessToken != t2.AccessToken {
		t.Errorf("Invalidate(stale) = %v, %v; want the current token untouched", refreshed, err)
	}
	if n := sim.Calls()["/cgi-bin/stable_token"]; n != 2 {
		t.Errorf("stable_token calls = %d, want 2 (one fetch, one forced)", n)
	}
	// Forced refreshes within 30 s of each other: WeChat's limit holds.
	t4, _, _ := h.Invalidate(ctx, t2.AccessToken)
	if t4.AccessToken != t2.AccessToken {
		t.Error("a second forced refresh within 30 s replaced the token")
	}
}

// waitFor polls get until ok holds, for at most five seconds.
func waitFor[T any](t *testing.T, get func() T, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := get()
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 5s: last %v", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flakyWeChat is WeChat in front of the simulator: while mode is set,
// every call fails that way ("503", "-1" or "hang" until the caller gives
// up) and is counted; otherwise the simulator answers.
type flakyWeChat struct {
	sim      *wechatsim.Server
	mode     atomic.Value // string
	failed   atomic.Int64
	inflight atomic.Int64
}

func (f *flakyWeChat) fail(mode string) { f.mode.Store(mode) }

func (f *flakyWeChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	mode, _ := f.mode.Load().(string)
	if mode == "" {
		f.sim.ServeHTTP(w, r)
		return
	}
	f.failed.Add(1)
	switch mode {
	case "503":
		w.WriteHeader(http.StatusServiceUnavailable)
	case "-1":
		_, _ = io.WriteString(w, `{"errcode":-1,"errmsg":"system error"}`)
	case "hang":
		// The server notices a client giving up only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
}

// replicas is two holders of one app sharing a store, each with its own
// WeChat client, on the simulator's clock.
type replicas struct {
	sim     *wechatsim.Server
	wechat  *flakyWeChat
	holders []*wechat.Holder
	path    string

	mu      sync.Mutex
	fetches []*wechat.AppToken
	results map[string]int
}

func newReplicas(t *testing.T, source string, timeout time.Duration) *replicas {
	t.Helper()
	return newReplicasOn(t, source, timeout, 500*time.Millisecond, session.NewMemory(0))
}

// newReplicasOn is newReplicas sharing store, with callers waiting at most
// wait for a fetch.
func newReplicasOn(t *testing.T, source string, timeout, wait time.Duration, store wechat.SharedStore) *replicas {
	t.Helper()
	sim := wechatsim.New(wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount})
	f := &flakyWeChat{sim: sim}
	f.fail("")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	r := &replicas{sim: sim, wechat: f, path: "/cgi-bin/" + source, results: map[string]int{}}
	for range 2 {
		r.holders = append(r.holders, wechat.NewHolder(wechat.New(wechat.Config{APIBase: srv.URL, Timeout: timeout}),
			wechat.App{AppID: oaID, Secret: oaSecret}, store, wechat.HolderConfig{
				Source:     source,
				IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
				Now:        sim.Now,
				Wait:       wait,
				OnFetch:    r.heard,
			}))
	}
	return r
}

func (r *replicas) heard(t *wechat.AppToken, result string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[result]++
	if t != nil {
		r.fetches = append(r.fetches, t)
	}
}

// calls counts the calls WeChat saw: failed ones and answered ones.
func (r *replicas) calls() int { return int(r.wechat.failed.Load()) + r.sim.Calls()[r.path] }

// settle waits until no call to WeChat is under way.
func (r *replicas) settle(t *testing.T) {
	t.Helper()
	waitFor(t, r.wechat.inflight.Load, func(n int64) bool { return n == 0 })
}

type got struct {
	tok  *wechat.AppToken
	err  error
	took time.Duration
}

// getAll calls Get n times at once on every holder.
func (r *replicas) getAll(n int) []got {
	out := make([]got, n*len(r.holders))
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			tok, err := r.holders[i%len(r.holders)].Get(context.Background())
			out[i] = got{tok, err, time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// TestHolderOutageInTheWindow: while WeChat fails during the refresh window
// every caller gets the current token at once, and WeChat sees attempts
// only as often as the backoff allows; once the token has expired callers
// get an error at once; when WeChat is back, one fetch serves everyone.
func TestHolderOutageInTheWindow(t *testing.T) {
	for _, mode := range []string{"503", "-1", "hang"} {
		t.Run(mode, func(t *testing.T) {
			r := newReplicas(t, "stable_token", 2*time.Second)
			first, err := r.holders[0].Get(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			r.wechat.fail(mode)
			// 4 minutes before expiry, inside the refresh window; then
			// requests on both replicas every 2 seconds until 4 s are left.
			r.sim.Advance(2*time.Hour - 4*time.Minute)
			before := r.calls()
			for range 118 {
				for _, g := range r.getAll(4) {
					if g.err != nil || g.tok.AccessToken != first.AccessToken || g.took > time.Second {
						t.Fatalf("in the window: %v after %v; want the current token at once", g.err, g.took)
					}
				}
				r.sim.Advance(2 * time.Second)
			}
			// Earliest attempts with the least jitter: 0, 0.5, 1.5, 3.5, 7.5,
			// 15.5, 31.5, then every 30 s: 13 in 236 s.
			t.Logf("%s: %d WeChat calls in the window", mode, r.calls()-before)
			if n := r.calls() - before; n < 1 || n > 13 {
				t.Errorf("WeChat saw %d calls in the window, want 1 to 13 (one per backoff period)", n)
			}

			r.sim.Advance(5 * time.Second) // expired a second ago
			before = r.calls()
			for range 2 {
				for _, g := range r.getAll(10) {
					if g.err == nil || g.took > 1500*time.Millisecond {
						t.Fatalf("after expiry: %v after %v; want an error at once", g.err, g.took)
					}
				}
			}
			if n := r.calls() - before; n > 1 {
				t.Errorf("40 callers after expiry made %d WeChat calls, want at most 1", n)
			}

			r.wechat.fail("")
			r.settle(t)
			r.sim.Advance(time.Minute + time.Second) // past the longest backoff
			before = r.calls()
			var fresh wechat.Secret
			for _, g := range r.getAll(10) {
				if g.err != nil || g.tok.AccessToken == first.AccessToken || (fresh != "" && g.tok.AccessToken != fresh) {
					t.Fatalf("after WeChat came back: %v; want one new token for all", g.err)
				}
				fresh = g.tok.AccessToken
			}
			if n := r.calls() - before; n != 1 {
				t.Errorf("WeChat back: %d calls, want 1", n)
			}
		})
	}
}

// TestHolderOneFetchPerLifetime: with 20-second tokens and callers on two
// replicas every 100 ms, each token is replaced once, shortly before it
// expires, with one WeChat call, and no caller fails.
func TestHolderOneFetchPerLifetime(t *testing.T) {
	for _, source := range []string{"stable_token", "token"} {
		t.Run(source, func(t *testing.T) {
			r := newReplicas(t, source, 2*time.Second)
			const life = 20 * time.Second
			r.sim.SetLifetimes(wechatsim.Lifetimes{AppAccessToken: life})
			start := r.sim.Now()
			// 90 s: refreshes near 19.2, 38.4, 57.6 and 76.8 s.
			for range 900 {
				now := r.sim.Now()
				for _, g := range r.getAll(2) {
					if g.err != nil || !now.Before(g.tok.ExpiresAt) {
						t.Fatalf("at %v: %v", now.Sub(start), g.err)
					}
				}
				r.sim.Advance(100 * time.Millisecond)
			}
			r.settle(t)
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.fetches) != 5 || r.results["ok"] != 5 || r.calls() != 5 {
				t.Fatalf("90 s of 20 s tokens: %d tokens, results %v, %d WeChat calls; want 5 of each", len(r.fetches), r.results, r.calls())
			}
			for i := 1; i < len(r.fetches); i++ {
				prev, next := r.fetches[i-1], r.fetches[i]
				if next.AccessToken == prev.AccessToken || next.FetchedAt.Before(prev.ExpiresAt.Add(-time.Second)) {
					t.Errorf("token %d fetched %v before the previous expired; want a new token within the last second", i+1, prev.ExpiresAt.Sub(next.FetchedAt))
				}
			}
		})
	}
}

// pooledStore is a shared store reached the way Redis is: through a few
// connections, each call holding one for a moment, and a call still
// without one at its timeout fails (go-redis counts the wait for a pooled
// connection against the call's deadline).
type pooledStore struct {
	wechat.SharedStore
	conns   chan struct{}
	latency time.Duration
	timeout time.Duration
	// tokenReads counts the reads of the shared token.
	tokenReads atomic.Int64
}

func newPooledStore(conns int, latency, timeout time.Duration) *pooledStore {
	return &pooledStore{SharedStore: session.NewMemory(0), conns: make(chan struct{}, conns), latency: latency, timeout: timeout}
}

func (s *pooledStore) do(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	select {
	case s.conns <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for a connection: %w", session.ErrUnavailable, ctx.Err())
	}
	defer func() { <-s.conns }()
	rtt := time.NewTimer(s.latency)
	defer rtt.Stop()
	select {
	case <-rtt.C:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", session.ErrUnavailable, ctx.Err())
	}
	return call(ctx)
}

func (s *pooledStore) Get(ctx context.Context, key string) (b []byte, err error) {
	if strings.HasPrefix(key, "apptoken:current:") {
		s.tokenReads.Add(1)
	}
	err = s.do(ctx, func(ctx context.Context) error {
		b, err = s.SharedStore.Get(ctx, key)
		return err
	})
	return b, err
}

func (s *pooledStore) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	return s.do(ctx, func(ctx context.Context) error { return s.SharedStore.Set(ctx, key, v, ttl) })
}

func (s *pooledStore) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (won bool, err error) {
	err = s.do(ctx, func(ctx context.Context) error {
		won, err = s.SharedStore.SetNX(ctx, key, v, ttl)
		return err
	})
	return won, err
}

func (s *pooledStore) Delete(ctx context.Context, key string) error {
	return s.do(ctx, func(ctx context.Context) error { return s.SharedStore.Delete(ctx, key) })
}

// TestHolderBurstAtExpiry: the token has expired and 200 callers on two
// replicas ask at once, over a store that answers one call at a time in
// 5 ms within a 600 ms timeout (Redis through its connection pool, small
// for the burst). Every caller gets the one new token: the fetch needs
// about a dozen calls (60 ms). Before, each caller read the store itself
// (200 reads, 1 s), and polled it while the other replica fetched, so the
// callers queued for the store past its timeout and failed with "store
// unavailable" (503 at /app-token) instead of waiting for the fetch.
func TestHolderBurstAtExpiry(t *testing.T) {
	store := newPooledStore(1, 5*time.Millisecond, 600*time.Millisecond)
	r := newReplicasOn(t, "stable_token", 2*time.Second, 2*time.Second, store)
	old, err := r.holders[0].Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.sim.Advance(2*time.Hour + time.Minute)
	before, readsBefore := r.calls(), store.tokenReads.Load()
	gots := r.getAll(100)
	failed := 0
	tokens := map[wechat.Secret]int{}
	for _, g := range gots {
		if g.err != nil {
			if failed++; failed == 1 {
				t.Errorf("a caller failed after %v: %v", g.took, g.err)
			}
			continue
		}
		tokens[g.tok.AccessToken]++
	}
	if failed > 0 || len(tokens) != 1 || tokens[old.AccessToken] > 0 {
		t.Errorf("%d of %d callers failed; tokens %d (old one %d times); want one new token for all", failed, len(gots), len(tokens), tokens[old.AccessToken])
	}
	if n := r.calls() - before; n != 1 {
		t.Errorf("WeChat calls = %d, want 1", n)
	}
	// Reads follow the store's pace, not the callers' number.
	if n := store.tokenReads.Load() - readsBefore; n >= int64(len(gots))/4 {
		t.Errorf("%d callers read the shared token %d times, want fewer than %d", len(gots), n, len(gots)/4)
	}
}

// TestHolderWaitEndsWithTheOthersFetch: a replica waiting for another
// replica's fetch stops waiting once that fetch has ended (its lease gone)
// with neither a token nor a pause in force by this replica's clock, which
// is what a holder whose clock runs behind leaves (its pause is already
// over here). Before, such a caller waited its whole Wait: every caller on
// a replica with a clock ahead of the holder's waited 2 s for a 503.
func TestHolderWaitEndsWithTheOthersFetch(t *testing.T) {
	sim := wechatsim.New(wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	store := session.NewMemory(0)
	h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: srv.URL}), wechat.App{AppID: oaID, Secret: oaSecret},
		store, wechat.HolderConfig{
			IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
			Wait:       time.Minute,
		})
	ctx := context.Background()
	// Another replica holds the lease; it ends in a second, leaving no
	// token and no pause.
	if ok, err := store.SetNX(ctx, "apptoken:lease:"+oaID, []byte{1}, time.Second); !ok || err != nil {
		t.Fatalf("taking the lease: %v, %v", ok, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.Get(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, wechat.ErrUnavailable) {
			t.Errorf("Get once the other fetch ended = %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Get still waits 20 s after the other replica's lease ended (Wait is 1 minute)")
	}
	if n := sim.Calls()["/cgi-bin/stable_token"]; n != 0 {
		t.Errorf("stable_token calls = %d: the caller fetched instead of waiting for the lease holder", n)
	}
}
