package wechat_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// fakeStable answers every /cgi-bin/stable_token call with body.
func fakeStable(t *testing.T, body *atomic.Value, calls *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.WriteString(w, body.Load().(string))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestHolderAnswerWithoutToken: stable_token answers HTTP 200 without an
// errcode but without a token ({}), with an empty one, or with no lifetime.
// The holder must not share that as the app's token (every caller would
// get "" for two hours, or every Get would call WeChat again), and a huge
// expires_in is held to WeChat's documented 2 hours.
func TestHolderAnswerWithoutToken(t *testing.T) {
	for _, body := range []string{`{}`, `{"access_token":"","expires_in":7200}`, `{"access_token":"T","expires_in":0}`} {
		t.Run(body, func(t *testing.T) {
			var answer atomic.Value
			answer.Store(body)
			var calls atomic.Int64
			now := time.Now()
			h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: fakeStable(t, &answer, &calls)}), wechat.App{AppID: oaID, Secret: oaSecret},
				session.NewMemory(0), wechat.HolderConfig{
					IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
					Now:        func() time.Time { return now },
				})
			for i := 0; i < 5; i++ {
				if tok, err := h.Get(context.Background()); err == nil {
					t.Fatalf("Get %d after WeChat answered %s: token %q expiring %s, want an error", i, body, tok.AccessToken.Reveal(), tok.ExpiresAt.Sub(now))
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("WeChat calls = %d for 5 Gets, want 1 then the backoff", n)
			}
		})
	}
	t.Run("huge expires_in", func(t *testing.T) {
		var answer atomic.Value
		answer.Store(`{"access_token":"T","expires_in":100000000000}`)
		var calls atomic.Int64
		now := time.Now()
		h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: fakeStable(t, &answer, &calls)}), wechat.App{AppID: oaID, Secret: oaSecret},
			session.NewMemory(0), wechat.HolderConfig{
				IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
				Now:        func() time.Time { return now },
			})
		tok, err := h.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if life := tok.ExpiresAt.Sub(now); life != 2*time.Hour {
			t.Errorf("lifetime of a token WeChat said lives 1e11 s: %s, want WeChat's documented 2h", life)
		}
	})
}

// TestHolderPauseAfterClockJump: a failure recorded while the clock ran a
// day ahead (a replica's, or this one's before NTP stepped it back) must
// not pause fetching for that day: no pause is ever longer than a minute,
// so a pause ending further ahead than that is read as none.
func TestHolderPauseAfterClockJump(t *testing.T) {
	var answer atomic.Value
	answer.Store(`{"errcode":-1,"errmsg":"system error"}`)
	var calls atomic.Int64
	base := time.Now()
	var offset atomic.Int64
	offset.Store(int64(24 * time.Hour))
	h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: fakeStable(t, &answer, &calls), Retries: -1}), wechat.App{AppID: oaID, Secret: oaSecret},
		session.NewMemory(0), wechat.HolderConfig{
			IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
			Now:        func() time.Time { return base.Add(time.Duration(offset.Load())) },
		})
	if _, err := h.Get(context.Background()); err == nil {
		t.Fatal("Get while WeChat fails: no error")
	}
	offset.Store(0) // the clock steps back a day; WeChat answers again
	answer.Store(`{"access_token":"T","expires_in":7200}`)
	if tok, err := h.Get(context.Background()); err != nil || tok.AccessToken != "T" {
		t.Fatalf("Get after the clock stepped back a day: %v, want the token (calls %d)", err, calls.Load())
	}
}

// flakyStore is a shared store that fails every call while down is set.
type flakyStore struct {
	wechat.SharedStore
	down atomic.Bool
}

var errStoreDown = errors.New("store down")

func (s *flakyStore) Get(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() {
		return nil, errStoreDown
	}
	return s.SharedStore.Get(ctx, key)
}

func (s *flakyStore) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if s.down.Load() {
		return errStoreDown
	}
	return s.SharedStore.Set(ctx, key, v, ttl)
}

func (s *flakyStore) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if s.down.Load() {
		return false, errStoreDown
	}
	return s.SharedStore.SetNX(ctx, key, v, ttl)
}

func (s *flakyStore) Delete(ctx context.Context, key string) error {
	if s.down.Load() {
		return errStoreDown
	}
	return s.SharedStore.Delete(ctx, key)
}

// TestHolderStoreDown: while the shared store is unreachable, the holder
// serves the valid token it last saw instead of failing, and asks WeChat
// nothing (the lease that keeps fetches one at a time is in the store);
// once the token has expired it fails with the store's error.
func TestHolderStoreDown(t *testing.T) {
	var answer atomic.Value
	answer.Store(`{"access_token":"T","expires_in":7200}`)
	var calls atomic.Int64
	now := time.Now()
	store := &flakyStore{SharedStore: session.NewMemory(0)}
	h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: fakeStable(t, &answer, &calls)}), wechat.App{AppID: oaID, Secret: oaSecret},
		store, wechat.HolderConfig{
			IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
			Now:        func() time.Time { return now },
		})
	ctx := context.Background()
	if _, err := h.Get(ctx); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	for _, at := range []time.Duration{time.Minute, time.Hour + 57*time.Minute} { // fresh, then in the window
		now = now.Add(at)
		if tok, err := h.Get(ctx); err != nil || tok.AccessToken != "T" {
			t.Errorf("Get %s later with the store down: %v, want the current token", at, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("WeChat calls = %d, want 1 (none while the store is down)", n)
	}
	now = now.Add(3 * time.Minute) // expired
	if _, err := h.Get(ctx); !errors.Is(err, errStoreDown) {
		t.Errorf("Get after expiry with the store down: %v, want the store's error", err)
	}
}

// TestHolderInvalidateLoop: a backend that gets 40001 for a reason of its
// own reports every token it is given as invalid, in a loop. The first
// report replaces the token; the next ones, within 30 s of it, must not
// reach WeChat: a stable_token call that may not force answers the same
// token (a wasted call), and each /cgi-bin/token call replaces the token and
// counts against its 2000-a-day quota, whose end (45009) blocks the app
// token for everyone.
func TestHolderInvalidateLoop(t *testing.T) {
	for _, tc := range []struct{ source, path string }{
		{"stable_token", "/cgi-bin/stable_token"},
		{"token", "/cgi-bin/token"},
	} {
		t.Run(tc.source, func(t *testing.T) {
			h, sim, _ := newHolder(t, tc.source)
			ctx := context.Background()
			tokens := map[wechat.Secret]bool{}
			for i := 0; i < 10; i++ {
				cur, err := h.Get(ctx)
				if err != nil {
					t.Fatal(err)
				}
				tokens[cur.AccessToken] = true
				if _, _, err := h.Invalidate(ctx, cur.AccessToken); err != nil {
					t.Fatalf("Invalidate %d: %v", i, err)
				}
			}
			if n := sim.Calls()[tc.path]; n != 2 || len(tokens) != 2 {
				t.Errorf("10 reports of the current token within 30 s: %d WeChat calls, %d tokens; want 2 calls (the fetch, one replacement) and 2 tokens", n, len(tokens))
			}
		})
	}
}

// TestHolderOddPauseRecord: the shared pause record is read back from the
// store; a failure count no version writes (negative, or at the top of an
// int, so that one more overflows) must still give a bounded pause, not a
// panic on a negative shift.
func TestHolderOddPauseRecord(t *testing.T) {
	for _, failures := range []string{"-5", "9223372036854775807"} {
		t.Run(failures, func(t *testing.T) {
			var answer atomic.Value
			answer.Store(`{"errcode":-1,"errmsg":"system error"}`)
			var calls atomic.Int64
			store := session.NewMemory(0)
			_ = store.Set(context.Background(), "apptoken:backoff:"+oaID, []byte(`{"failures":`+failures+`}`), time.Minute)
			h := wechat.NewHolder(wechat.New(wechat.Config{APIBase: fakeStable(t, &answer, &calls), Retries: -1}), wechat.App{AppID: oaID, Secret: oaSecret},
				store, wechat.HolderConfig{IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) }})
			if _, err := h.Get(context.Background()); err == nil {
				t.Fatal("Get while WeChat fails: no error")
			}
		})
	}
}
