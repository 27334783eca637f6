package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// Lifetimes in the run: WeChat user tokens live 20 s (the gateway
// refreshes them inside its 8 s margin) and app tokens 30 s, so a 60 s run
// sees three and two. An app token is replaced in the last 25th of its
// life, as WeChat's 2-hour ones are in their last 5 minutes: 1.2 s here,
// room for a few attempts paced by the callers' requests.
const (
	lifetime    = 20 * time.Second
	appLifetime = 30 * time.Second
)

func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("SOAK")
	if v == "" {
		if testing.Short() {
			t.Skip("soak: -short")
		}
		return 30 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 20*time.Second || d > time.Hour {
		t.Fatalf("SOAK=%q: want a duration from 20s to 1h", v)
	}
	return d
}

func TestSoak(t *testing.T) {
	d := soakDuration(t)
	w := newWorld(t, wechatsim.Lifetimes{SNSAccessToken: lifetime, AppAccessToken: appLifetime})
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tally := newTally()

	browsers := make([]*browser, 16)
	for i := range browsers {
		browsers[i] = newBrowser(w, fmt.Sprintf("b%02d", i), tally)
		if err := browsers[i].login(context.Background()); err != nil {
			t.Fatalf("%s: first login: %v", browsers[i].user, err)
		}
	}
	apps := make([]*appClient, 8)
	for i := range apps {
		apps[i] = newAppClient(w, fmt.Sprintf("a%02d", i), tally)
		if err := apps[i].login(context.Background()); err != nil {
			t.Fatalf("%s: first login: %v", apps[i].user, err)
		}
	}
	poller := &appTokenPoller{w: w, tally: tally, seen: map[string]bool{}}
	// Newcomers log in through the whole run, so logins meet every fault.
	var newcomers []*browser
	var startRSS, startG float64

	w.began = time.Now() // before any driver reads it
	var wg sync.WaitGroup
	for _, b := range browsers {
		wg.Add(1)
		go func() { defer wg.Done(); b.run(ctx) }()
	}
	for _, a := range apps {
		wg.Add(1)
		go func() { defer wg.Done(); a.run(ctx) }()
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			b := newBrowser(w, fmt.Sprintf("n%03d", i), tally)
			if err := b.login(ctx); err != nil {
				if ctx.Err() == nil {
					t.Errorf("%s: login failed 8 times: %v", b.user, err)
				}
				return
			}
			tally.count("newcomer logged in")
			// A person who logged in and left: no connection kept open.
			b.c.CloseIdleConnections()
			newcomers = append(newcomers, b)
			time.Sleep(time.Second)
		}
	}()
	go func() { defer wg.Done(); poller.run(ctx) }()
	go func() { defer wg.Done(); w.upstreamSchedule(ctx) }()
	faults := w.faultSchedule(ctx, d, func() { startRSS, startG = processFigures(w.replicas[0]) })
	wg.Wait()
	endRSS, endG := processFigures(w.replicas[0])

	// Every login must still work after the run: nothing was lost.
	lostSessions, lostFamilies := 0, 0
	for _, b := range append(browsers, newcomers...) {
		if err := b.check(context.Background()); err != nil {
			lostSessions++
			t.Errorf("%s: session lost: %v", b.user, err)
		}
	}
	for _, a := range apps {
		if err := a.check(context.Background()); err != nil {
			lostFamilies++
			t.Errorf("%s: token family lost: %v", a.user, err)
		}
	}

	calls := w.sim.Calls()
	logins := float64(len(browsers) + len(apps) + len(newcomers)/2) // newcomers live half the run on average
	lifetimes := d.Seconds() / lifetime.Seconds()
	refreshCalls := float64(calls["/sns/oauth2/refresh_token"])
	perRefresh := refreshCalls / (logins * lifetimes)
	fetches := w.metricSum("wxgate_token_refreshes_total", `kind="app"`, `result="ok"`)
	refreshes := w.metricSum("wxgate_token_refreshes_total", `kind="sns"`, `result="ok"`)
	callsPerRefresh := refreshCalls / max(refreshes, 1)

	report := tally.report(d, faults, len(browsers)+len(newcomers), len(apps), refreshCalls, perRefresh, callsPerRefresh, fetches, lifetimes,
		len(poller.seen), startRSS, endRSS, startG, endG, w)
	t.Log("\n" + report)
	if p := os.Getenv("SOAK_REPORT"); p != "" {
		_ = os.WriteFile(p, []byte(report), 0o644)
	}

	if n := tally.gateway5xx.Load(); n != 0 {
		t.Errorf("%d 5xx answers the upstream did not send; first: %s", n, tally.firstOf("gateway5xx"))
		for _, r := range w.replicas {
			t.Logf("%s's warnings and errors:\n%s", r.name, lastLines(r.out.String(), 30))
		}
	}
	if n := tally.transport.Load(); n != 0 {
		t.Errorf("%d requests failed without an answer on paths whose upstream answered; first: %s", n, tally.firstOf("transport"))
	}
	if n := tally.cutSeenWhole.Load(); n != 0 {
		t.Errorf("%d cut upstream bodies reached the client as complete", n)
	}
	if n := tally.wrongUser.Load(); n != 0 {
		t.Errorf("%d answers carried another user's identity", n)
	}
	if lostSessions+lostFamilies != 0 || tally.lost.Load() != 0 {
		t.Errorf("sessions lost %d, token families lost %d, logins ended during the run %d; want 0", lostSessions, lostFamilies, tally.lost.Load())
	}
	if perRefresh > 3 || callsPerRefresh > 2 {
		t.Errorf("WeChat refresh calls: %.2f per login per lifetime, %.2f per successful refresh; want at most 3 and 2 (faults included)", perRefresh, callsPerRefresh)
	}
	// One fetch per token: a token is replaced in the last 25th of its life
	// (WeChat's 5 minutes of 2 hours), so each lives 24/25 of a lifetime
	// before the next, plus the first; give or take the one in flight at
	// either end.
	perToken := appLifetime * 24 / 25
	if want := d.Seconds()/perToken.Seconds() + 1; math.Abs(fetches-want) > 1.5 {
		t.Errorf("app-token fetches = %.0f over %s, want %.1f (one per token's %s)", fetches, d, want, perToken)
	}
	if n := tally.appTokenFailed.Load(); n != 0 {
		t.Errorf("/app-token failed %d times (first: %s); a valid token was always available", n, tally.firstOf("apptoken"))
	}
	if endG > startG+25 {
		t.Errorf("goroutines on gw1 grew from %.0f to %.0f", startG, endG)
	}
	if endRSS > startRSS*1.5+16<<20 {
		t.Errorf("RSS of gw1 grew from %.1f to %.1f MiB", startRSS/(1<<20), endRSS/(1<<20))
	}
}

// faultSchedule injects, at fixed shares of the run, every failure the
// soak covers, and returns what it injected once the run ends.
// warm is called once every driver runs, for the figures at start.
func (w *world) faultSchedule(ctx context.Context, d time.Duration, warm func()) []string {
	var log []string
	at := func(share float64, what string, f func()) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(w.start(d, share))):
		}
		f()
		log = append(log, fmt.Sprintf("%5.1fs  %s", time.Since(w.began).Seconds(), what))
	}
	at(0.05, "figures at start read", warm)
	at(0.10, "WeChat 503 on 20 token refreshes", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/refresh_token", HTTPStatus: 503, Body: "busy", Times: 20})
	})
	at(0.18, "WeChat hangs 5 s on 6 token refreshes", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/refresh_token", DelayMS: 5000, Times: 6})
	})
	at(0.26, "WeChat -1 on 4 code exchanges (logins)", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/access_token", Errcode: -1, Times: 4})
	})
	at(0.34, "WeChat 503 on 3 app-token fetches", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/cgi-bin/stable_token", HTTPStatus: 503, Body: "busy", Times: 3})
	})
	at(0.42, "WeChat -1 on 10 token refreshes", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/refresh_token", Errcode: -1, Times: 10})
	})
	at(0.50, "Redis restarted (append-only file kept)", func() {
		w.redis.Stop()
		w.redis.Restart()
	})
	at(0.62, "SIGTERM to gw2, then started again", func() {
		r := w.replicas[1]
		w.retired = append(w.retired, r.metrics())
		if err := r.terminate(20 * time.Second); err != nil {
			w.t.Errorf("gw2 after SIGTERM: %v\n%s", err, r.out)
		}
		r.start()
	})
	at(0.78, "WeChat hangs 5 s on 3 code exchanges (logins)", func() {
		w.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/access_token", DelayMS: 5000, Times: 3})
	})
	<-ctx.Done()
	return log
}

func (w *world) start(d time.Duration, share float64) time.Time {
	return w.began.Add(time.Duration(float64(d) * share))
}

// upstreamSchedule restarts the upstream every 3 s.
func (w *world) upstreamSchedule(ctx context.Context) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.up.restart()
		}
	}
}

// processFigures reads a replica's RSS (bytes) and goroutines.
func processFigures(r *replica) (rss, goroutines float64) {
	m := r.metrics()
	return metricSum(m, "process_resident_memory_bytes"), metricSum(m, "go_goroutines")
}

// tally counts what users saw.
type tally struct {
	mu       sync.Mutex
	byStatus map[string]int
	first    map[string]string

	gateway5xx, transport, cutSeenWhole, wrongUser, lost, appTokenFailed atomic.Int64
	loginRetries                                                         atomic.Int64
}

func newTally() *tally { return &tally{byStatus: map[string]int{}, first: map[string]string{}} }

func (t *tally) count(key string) {
	t.mu.Lock()
	t.byStatus[key]++
	t.mu.Unlock()
}

func (t *tally) note(kind, what string) {
	t.mu.Lock()
	if _, ok := t.first[kind]; !ok {
		t.first[kind] = what
	}
	t.mu.Unlock()
}

func (t *tally) firstOf(kind string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first[kind]
}

// request is one proxied request's path; the upstream misbehaves on some.
var requestPaths = []string{"/api/echo", "/api/echo", "/api/echo", "/api/echo", "/api/slow", "/api/big", "/api/fail", "/api/cut", "/api/echo", "/api/stall"}

// judge classifies one proxied answer. It returns false when the caller's
// login is gone (401).
func (t *tally) judge(ctx context.Context, who, path string, resp *http.Response, err error, wantOpenID string) bool {
	if err != nil {
		t.count(path + " no answer")
		t.transport.Add(1)
		t.note("transport", fmt.Sprintf("%s %s: %v", who, path, err))
		return true
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	if ctx.Err() != nil {
		// The run ended while the body came: nobody's failure.
		return true
	}
	status := fmt.Sprint(resp.StatusCode)
	switch {
	case path == "/api/cut" && resp.StatusCode < 500:
		if rerr == nil && resp.StatusCode == 200 {
			t.cutSeenWhole.Add(1)
			status += " whole"
		} else if rerr != nil {
			status = "cut, seen as broken"
		}
	case rerr != nil:
		t.transport.Add(1)
		t.note("transport", fmt.Sprintf("%s %s: body: %v", who, path, rerr))
		status += " broken body"
	case resp.StatusCode == 401:
		t.lost.Add(1)
		t.note("lost", fmt.Sprintf("%s %s: %s", who, path, body))
	case resp.StatusCode >= 500 && resp.Header.Get("X-Soak-Upstream") == "1":
		status += " (upstream's)"
	case resp.StatusCode == 504 && path == "/api/stall":
		status += " (upstream stalled)"
	case resp.StatusCode >= 500:
		t.gateway5xx.Add(1)
		t.note("gateway5xx", fmt.Sprintf("%s %s: %d %.200s", who, path, resp.StatusCode, body))
	case resp.StatusCode == 200 && path == "/api/big" && len(body) != bigBody:
		t.transport.Add(1)
		t.note("transport", fmt.Sprintf("%s %s: %d of %d bytes", who, path, len(body), bigBody))
	case resp.StatusCode == 200 && (path == "/api/echo" || path == "/api/slow"):
		var got struct{ OpenID string }
		if json.Unmarshal(body, &got) != nil || got.OpenID != wantOpenID {
			t.wrongUser.Add(1)
		}
	}
	t.count(path + " " + status)
	return resp.StatusCode != 401
}

// browser is a person on a phone inside WeChat: a cookie jar that logs in
// through the official account and then uses the app.
type browser struct {
	w      *world
	user   string
	openID string
	c      *http.Client
	tally  *tally
}

func newBrowser(w *world, user string, tally *tally) *browser {
	jar, _ := cookiejar.New(nil)
	u, _ := w.sim.User(oaID, user)
	return &browser{w: w, user: user, openID: u.OpenID, tally: tally, c: &http.Client{
		Jar:           jar,
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// login runs the official-account flow; a login WeChat fails (an injected
// fault) is tried again, as a person would.
func (b *browser) login(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			b.tally.loginRetries.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
		if err = b.loginOnce(ctx); err == nil {
			return nil
		}
	}
	return err
}

func (b *browser) loginOnce(ctx context.Context) error {
	loc := b.w.lb.url() + "/home"
	for hop := 0; hop < 6; hop++ {
		if strings.HasPrefix(loc, b.w.simURL) {
			loc = strings.TrimSuffix(loc, "#wechat_redirect") + "&sim_user=" + b.user + "&sim_decision=allow"
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
		req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50")
		resp, err := b.c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
			next, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				return err
			}
			loc = next.String()
		case resp.StatusCode == 200 && strings.HasSuffix(loc, "/home"):
			return nil
		default:
			b.tally.count("login " + fmt.Sprint(resp.StatusCode))
			return fmt.Errorf("GET %s: %d", loc, resp.StatusCode)
		}
	}
	return errors.New("login: too many redirects")
}

func (b *browser) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		path := requestPaths[i%len(requestPaths)]
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.w.lb.url()+path, nil)
		resp, err := b.c.Do(req)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return
		}
		if !b.tally.judge(ctx, b.user, path, resp, err, b.openID) {
			// The session is gone: counted as lost; log in again so the run
			// goes on.
			_ = b.login(ctx)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

// check reports whether the browser's session still works.
func (b *browser) check(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.w.lb.url()+"/api/echo", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), b.openID) {
		return fmt.Errorf("GET /api/echo: %d %.200s", resp.StatusCode, body)
	}
	return nil
}

// appClient is the mobile app: a token pair from /app/login, refreshed
// every 10 s (rotation) and whenever the gateway says token_expired.
type appClient struct {
	w              *world
	user, openID   string
	access, rotate string
	refreshedAt    time.Time
	c              *http.Client
	tally          *tally
}

func newAppClient(w *world, user string, tally *tally) *appClient {
	u, _ := w.sim.User(appID, user)
	return &appClient{w: w, user: user, openID: u.OpenID, tally: tally, c: &http.Client{Timeout: 15 * time.Second}}
}

func (a *appClient) post(ctx context.Context, path string, body any) (int, map[string]any, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.w.lb.url()+path, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = jsonDecode(resp.Body, &out)
	return resp.StatusCode, out, nil
}

func (a *appClient) take(out map[string]any) {
	a.access, _ = out["access_token"].(string)
	a.rotate, _ = out["refresh_token"].(string)
	a.refreshedAt = time.Now()
}

func (a *appClient) login(ctx context.Context) error {
	var last error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			a.tally.loginRetries.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
		code, err := a.w.simCode(ctx, appID, a.user)
		if err != nil {
			return err
		}
		status, out, err := a.post(ctx, "/_wxgate/app/login", map[string]string{"code": code})
		if err == nil && status == 200 {
			a.take(out)
			return nil
		}
		a.tally.count(fmt.Sprintf("app login %d", status))
		last = fmt.Errorf("app login: %d %v %v", status, out, err)
	}
	return last
}

// refresh rotates the pair. A refused refresh token is a lost login.
func (a *appClient) refresh(ctx context.Context) error {
	for attempt := 0; attempt < 5; attempt++ {
		status, out, err := a.post(ctx, "/_wxgate/token/refresh", map[string]string{"refresh_token": a.rotate})
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil && status == 200:
			a.take(out)
			return nil
		case err == nil && status == 401:
			return fmt.Errorf("refresh refused: %v", out)
		case err == nil && status >= 500:
			a.tally.gateway5xx.Add(1)
			a.tally.note("gateway5xx", fmt.Sprintf("%s refresh: %d %v", a.user, status, out))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("refresh: no answer")
}

func (a *appClient) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		if time.Since(a.refreshedAt) > 10*time.Second {
			if err := a.refresh(ctx); err != nil {
				a.tally.lost.Add(1)
				a.tally.note("lost", a.user+": "+err.Error())
				_ = a.login(ctx)
			}
		}
		path := requestPaths[(i+3)%len(requestPaths)]
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.w.lb.url()+path, nil)
		req.Header.Set("Authorization", "Bearer "+a.access)
		resp, err := a.c.Do(req)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return
		}
		if !a.tally.judge(ctx, a.user, path, resp, err, a.openID) {
			_ = a.login(ctx)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

func (a *appClient) check(ctx context.Context) error {
	if err := a.refresh(ctx); err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.w.lb.url()+"/api/echo", nil)
	req.Header.Set("Authorization", "Bearer "+a.access)
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), a.openID) {
		return fmt.Errorf("GET /api/echo: %d %.200s", resp.StatusCode, body)
	}
	return nil
}

// appTokenPoller is an internal service asking each replica for the
// official account's app token every 200 ms.
type appTokenPoller struct {
	w     *world
	tally *tally
	seen  map[string]bool
}

func (p *appTokenPoller) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		r := p.w.replicas[i%len(p.w.replicas)]
		_, admin := r.addrs()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/app-token?appid="+url.QueryEscape(oaID), nil)
		req.Header.Set("Authorization", "Bearer soak-admin-token-0123456789")
		resp, err := probe.Do(req)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			// A replica that is restarting has no admin listener: not a
			// failure of the app-token holder.
			p.tally.count("app-token: replica away")
		default:
			var out struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   int    `json:"expires_in"`
			}
			_ = jsonDecode(resp.Body, &out)
			resp.Body.Close()
			// expires_in counts whole seconds: 0 is a token in its last one.
			if resp.StatusCode == 200 && out.AccessToken != "" && out.ExpiresIn >= 0 {
				p.seen[out.AccessToken] = true
				p.tally.count("app-token 200")
			} else {
				p.tally.appTokenFailed.Add(1)
				p.tally.note("apptoken", fmt.Sprintf("%s at %.1fs: %d expires_in %d", r.name, time.Since(p.w.began).Seconds(), resp.StatusCode, out.ExpiresIn))
				p.tally.count(fmt.Sprintf("app-token %d", resp.StatusCode))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (t *tally) report(d time.Duration, faults []string, browsers, apps int, refreshCalls, perRefresh, callsPerRefresh, fetches, lifetimes float64,
	tokensSeen int, startRSS, endRSS, startG, endG float64, w *world) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %s, %d browsers (16 from the start, one more each second), %d app token pairs, 2 replicas on Redis, WeChat user tokens %s, app tokens %s\n\n", d, browsers, apps, lifetime, appLifetime)
	b.WriteString("faults injected:\n")
	for _, f := range faults {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	fmt.Fprintf(&b, "  every 3 s: upstream restart (%d); upstream idle timeout 1 s; /api/cut cuts its body (%d); /api/stall stalls past the 2 s timeout (%d)\n\n",
		w.up.restarts.Load(), w.up.cuts.Load(), w.up.stalls.Load())
	b.WriteString("answers by path and status:\n")
	t.mu.Lock()
	keys := make([]string, 0, len(t.byStatus))
	total := 0
	for k, n := range t.byStatus {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-40s %7d\n", k, t.byStatus[k])
	}
	t.mu.Unlock()
	fmt.Fprintf(&b, "  %-40s %7d\n\n", "total", total)
	fmt.Fprintf(&b, "5xx the upstream did not send:        %d\n", t.gateway5xx.Load())
	fmt.Fprintf(&b, "requests without an answer:           %d\n", t.transport.Load())
	fmt.Fprintf(&b, "cut bodies delivered as complete:     %d\n", t.cutSeenWhole.Load())
	fmt.Fprintf(&b, "answers with another's identity:      %d\n", t.wrongUser.Load())
	fmt.Fprintf(&b, "sessions and token families lost:     %d\n", t.lost.Load())
	fmt.Fprintf(&b, "logins retried after a WeChat fault:  %d\n", t.loginRetries.Load())
	fmt.Fprintf(&b, "WeChat refresh calls:                 %.0f (%.2f per login per lifetime, %.2f per successful refresh)\n", refreshCalls, perRefresh, callsPerRefresh)
	fmt.Fprintf(&b, "user-token refresh results:           %s\n", w.labelCounts("wxgate_token_refreshes_total", `kind="sns"`))
	fmt.Fprintf(&b, "app-token fetch results:              %s\n", w.labelCounts("wxgate_token_refreshes_total", `kind="app"`))
	fmt.Fprintf(&b, "app-token fetches:                    %.0f in %s of %s tokens (%d tokens served; %d stable_token calls, faults included)\n",
		fetches, d, appLifetime, tokensSeen, w.sim.Calls()["/cgi-bin/stable_token"])
	fmt.Fprintf(&b, "/app-token failures:                  %d\n", t.appTokenFailed.Load())
	fmt.Fprintf(&b, "gw1 RSS:                              %.1f -> %.1f MiB\n", startRSS/(1<<20), endRSS/(1<<20))
	fmt.Fprintf(&b, "gw1 goroutines:                       %.0f -> %.0f\n", startG, endG)
	return b.String()
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v) }

// metricSum adds a metric over every replica process of the run, the
// ones that exited included.
func (w *world) metricSum(name string, labels ...string) float64 {
	sum := 0.0
	for _, r := range w.replicas {
		sum += metricSum(r.metrics(), name, labels...)
	}
	for _, m := range w.retired {
		sum += metricSum(m, name, labels...)
	}
	return sum
}

// labelCounts lists a metric's result label values with their sums over
// every replica process.
func (w *world) labelCounts(name string, labels ...string) string {
	counts := map[string]float64{}
	scrapes := append([]string(nil), w.retired...)
	for _, r := range w.replicas {
		scrapes = append(scrapes, r.metrics())
	}
	for _, m := range scrapes {
		for _, l := range strings.Split(m, "\n") {
			i := strings.Index(l, `result="`)
			if !strings.HasPrefix(l, name+"{") || i < 0 {
				continue
			}
			res := l[i+len(`result="`):]
			res = res[:strings.IndexByte(res, '"')]
			counts[res] += metricSum(l, name, labels...)
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		if counts[k] > 0 {
			out = append(out, fmt.Sprintf("%s %.0f", k, counts[k]))
		}
	}
	return strings.Join(out, ", ")
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
