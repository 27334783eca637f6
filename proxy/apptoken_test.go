package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// appTokenWeChat is WeChat in front of the simulator: while failing is set,
// every call gets a 503 and is counted; otherwise the simulator answers.
type appTokenWeChat struct {
	sim      *wechatsim.Server
	failing  atomic.Bool
	failed   atomic.Int64
	inflight atomic.Int64
}

func (f *appTokenWeChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	if !f.failing.Load() {
		f.sim.ServeHTTP(w, r)
		return
	}
	f.failed.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusServiceUnavailable)
}

// newAppTokenCluster is two replicas on a real Redis whose WeChat is f.
func newAppTokenCluster(t *testing.T) (*cluster, *appTokenWeChat) {
	t.Helper()
	c := &cluster{t: t, redis: redistest.Start(t)}
	t.Setenv("WXGATE_TEST_ADMIN", adminSecret)
	clock := func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
	sim, _ := newSim(t)
	f := &appTokenWeChat{sim: sim}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	o := envOptions{redisAddr: c.redis.Addr, clock: clock, adminEnv: "WXGATE_TEST_ADMIN", sim: sim, simURL: srv.URL}
	first := newEnvOpts(t, o)
	o.publicURL, o.keyFile = first.url, first.keyFile
	c.gws = []*env{first, newEnvOpts(t, o)}
	return c, f
}

// fetchAttemptsWithin is the most app-token fetch attempts the backoff allows in
// d: one at once, then after pauses of at least 0.5, 1, 2, ... 30 s.
func fetchAttemptsWithin(d time.Duration) int {
	n, at, pause := 1, time.Duration(0), time.Second
	for {
		at += pause / 2
		if at > d {
			return n
		}
		n++
		pause = min(2*pause, time.Minute)
	}
}

// getAppTokens asks both replicas for the app token n times at once.
func (c *cluster) getAppTokens(n int) (statuses map[int]int, tokens map[string]int, slowest time.Duration) {
	statuses, tokens = map[int]int{}, map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			status, m := c.admin(i%2, "GET", "/app-token?appid="+mpID, nil, adminSecret)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if tok, _ := m["access_token"].(string); tok != "" {
				tokens[tok]++
			}
			slowest = max(slowest, took)
		}()
	}
	wg.Wait()
	return statuses, tokens, slowest
}

// TestAppTokenDuringAnOutage: WeChat down while the app token is due for
// refresh does not fail /app-token as long as the token is valid, and
// costs WeChat one call per backoff period; after expiry the answer is a
// quick 503; when WeChat is back, one fetch serves both replicas.
func TestAppTokenDuringAnOutage(t *testing.T) {
	c, f := newAppTokenCluster(t)
	calls := func() int { return int(f.failed.Load()) + f.sim.Calls()["/cgi-bin/stable_token"] }
	status, m := c.admin(0, "GET", "/app-token?appid="+mpID, nil, adminSecret)
	if status != 200 {
		t.Fatalf("GET /app-token: %d %v", status, m)
	}
	current := m["access_token"].(string)

	f.failing.Store(true)
	c.both(2*time.Hour - 4*time.Minute) // inside the refresh window
	before, start := calls(), time.Now()
	statuses, tokens, slowest := c.getAppTokens(40)
	if statuses[200] != 40 || tokens[current] != 40 {
		t.Errorf("WeChat down, token valid for 4 more minutes: statuses %v, %d of 40 got the current token (slowest %v)", statuses, tokens[current], slowest)
	}
	if n, most := calls()-before, fetchAttemptsWithin(time.Since(start)); n > most {
		t.Errorf("40 requests made %d WeChat calls in %v, want at most %d", n, time.Since(start), most)
	}

	c.both(4*time.Minute + time.Second) // expired
	before = calls()
	statuses, _, slowest = c.getAppTokens(20)
	if statuses[http.StatusServiceUnavailable] != 20 || slowest > 2*time.Second {
		t.Errorf("WeChat down, token expired: statuses %v, slowest %v; want 20 quick 503s", statuses, slowest)
	}
	if n := calls() - before; n > 1 {
		t.Errorf("20 requests after expiry made %d WeChat calls, want at most 1", n)
	}

	f.failing.Store(false)
	for deadline := time.Now().Add(5 * time.Second); f.inflight.Load() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a WeChat call still under way after 5s")
		}
	}
	c.both(time.Minute + time.Second) // past the longest backoff
	before = calls()
	statuses, tokens, _ = c.getAppTokens(20)
	if statuses[200] != 20 || len(tokens) != 1 || tokens[current] != 0 {
		t.Errorf("WeChat back: statuses %v, %d tokens; want one new token for all", statuses, len(tokens))
	}
	if n := calls() - before; n != 1 {
		t.Errorf("WeChat back: %d calls, want 1", n)
	}
}
