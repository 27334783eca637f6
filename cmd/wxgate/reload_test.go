package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// Reloading gateway.toml on SIGHUP (issue 11 item 7), on the built binary
// under load, the way an operator does it.

const reloadOA, reloadOASecret = "wx00000000000000a1", "reload-test-oa-secret"

// reloadConfig is the test gateway's config: /hot/** public on the
// upstream app at upstreamURL, /flip/** flipAction, everything else behind
// the login.
func reloadConfig(port, aport, simURL, upstreamURL, flipAction string) string {
	return fmt.Sprintf(`[server]
listen = "127.0.0.1:%s"
admin_listen = "127.0.0.1:%s"
public_url = "http://127.0.0.1:%s"
log_level = "warn"
shutdown_delay = "0s"
[session]
snapshot_file = "sessions.snapshot"
[tokens]
signing_key_file = "signing-key.pem"
[wechat]
api_base = %q
open_base = %q
[wechat.official_account]
appid = %q
secret_env = "WXGATE_TEST_RELOAD_SECRET"
[[upstream]]
name = "app"
url = %q
[[route]]
name = "hot"
path = "/hot/**"
action = "public"
[[route]]
name = "flip"
path = "/flip/**"
action = %q
`, port, aport, port, simURL, simURL, reloadOA, upstreamURL, flipAction)
}

// versionUpstream answers every request with its version, "v<n>", and the
// openid wxgate sent it in X-Seen-Openid.
func versionUpstream(t *testing.T, n int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Openid", r.Header.Get("X-Wechat-Openid"))
		_, _ = io.WriteString(w, "v"+strconv.Itoa(n))
	}))
	t.Cleanup(s.Close)
	return s
}

// adminMetric reads one sample from the admin listener, -1 if absent or
// unreadable.
func adminMetric(admin, series string) float64 {
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// hammer is one client on keep-alive connections sending GET /hot/x in a
// loop; it records every failure and the version each answer came from.
type hammer struct {
	n       atomic.Int64 // requests answered
	conns   int          // connections opened to the gateway
	version atomic.Int64 // the last answer's version
	fails   []string
	// stale: answers from an older version than one this client had seen
	// already, or than the reload known done when the request started.
	stale []string
}

func (h *hammer) run(public string, stop <-chan struct{}, done func() int64, limit int) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	seen := int64(0)
	for i := 0; i < limit; i++ {
		select {
		case <-stop:
			return
		default:
		}
		floor := done()
		req, _ := http.NewRequest(http.MethodGet, public+"/hot/x", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) {
				if !i.Reused {
					h.conns++
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			h.fails = append(h.fails, err.Error())
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		v, perr := strconv.ParseInt(strings.TrimPrefix(string(b), "v"), 10, 64)
		if err != nil || resp.StatusCode != http.StatusOK || perr != nil || !strings.HasPrefix(string(b), "v") {
			h.fails = append(h.fails, fmt.Sprintf("%d %q %v", resp.StatusCode, b, err))
			continue
		}
		if v < seen || v < floor {
			h.stale = append(h.stale, fmt.Sprintf("v%d after v%d, with reload %d done", v, seen, floor))
		}
		seen = v
		h.version.Store(v)
		h.n.Add(1)
	}
}

// TestReloadUnderLoad: SIGHUP reloads of `wxgate serve` that move the
// route clients are hammering to another upstream (and flip another route
// from public to deny), with a refused bad file between them, fail no
// request: no connection error, no 5xx, and each client keeps its one
// keep-alive connection throughout.
// Every request that starts after a reload is seen done gets the new
// upstream, no client ever goes back to an older one, and a logged-in
// browser's session works throughout and after.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildWxgate(t)
	sim := httptest.NewServer(wechatsim.New(wechatsim.App{AppID: reloadOA, Secret: reloadOASecret, Type: wechatsim.OfficialAccount, Domain: "127.0.0.1"}))
	defer sim.Close()
	const versions = 4
	ups := make([]*httptest.Server, versions)
	for i := range ups {
		ups[i] = versionUpstream(t, i)
	}
	dir := t.TempDir()
	port, aport := freePort(t), freePort(t)
	public, admin := "http://127.0.0.1:"+port, "http://127.0.0.1:"+aport
	path := filepath.Join(dir, "gateway.toml")
	write := func(conf string) {
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadConfig(port, aport, sim.URL, ups[0].URL, "public"))
	p := newProc(t, bin, dir, append(os.Environ(), "WXGATE_TEST_RELOAD_SECRET="+reloadOASecret), "serve", "--config", path)
	p.run(t)
	if !pollUntil(30*time.Second, func() bool { s, _ := get(public + "/hot/x"); return s == http.StatusOK }) {
		t.Fatalf("wxgate serve not answering\n%s", p.stderr)
	}
	if s, _ := get(public + "/flip/x"); s != http.StatusOK {
		t.Fatalf("/flip/x before the reloads: %d, want 200", s)
	}

	browser := newClient(t, public)
	openid := browser.login("reloader")

	// The load: keep-alive clients, and the logged-in browser on a login
	// route, until stop (or a bound, should the test hang).
	const clients, limit = 8, 20000
	var reloaded atomic.Int64 // the last reload seen done
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hs := make([]*hammer, clients)
	for i := range hs {
		hs[i] = &hammer{}
		wg.Add(1)
		go func(h *hammer) { defer wg.Done(); h.run(public, stop, reloaded.Load, limit) }(hs[i])
	}
	var browserFails []string
	var browserN atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < limit; i++ {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, public+"/private/x", nil)
			req.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0.49")
			resp, err := browser.c.Do(req)
			if err != nil {
				browserFails = append(browserFails, err.Error())
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Seen-Openid") != openid {
				browserFails = append(browserFails, fmt.Sprintf("%d openid %q", resp.StatusCode, resp.Header.Get("X-Seen-Openid")))
			}
			browserN.Add(1)
		}
	}()
	// progress waits until every client has had n more answers.
	progress := func(what string, n int64) {
		t.Helper()
		base := make([]int64, clients)
		for i, h := range hs {
			base[i] = h.n.Load()
		}
		bn := browserN.Load()
		if !pollUntil(30*time.Second, func() bool {
			for i, h := range hs {
				if h.n.Load() < base[i]+n {
					return false
				}
			}
			return browserN.Load() > bn
		}) {
			t.Fatalf("%s: the clients stalled\n%s", what, p.stderr)
		}
	}
	waitMetric := func(series string, want float64) {
		t.Helper()
		if !pollUntil(30*time.Second, func() bool { return adminMetric(admin, series) == want }) {
			t.Fatalf("%s never reached %v (%v)\n%s", series, want, adminMetric(admin, series), p.stderr)
		}
	}
	progress("before the reloads", 150)

	okReloads, badReloads := 0, 0
	for v := 1; v < versions; v++ {
		if v == 2 {
			// A bad file between two good ones: refused, nothing changes.
			bad := reloadConfig(port, aport, sim.URL, ups[v].URL, "deny") + "[[route]]\nname = \"broken\"\npath = \"/broken/**\"\naction = \"maybe\"\n"
			write(bad)
			p.signal(t, syscall.SIGHUP)
			badReloads++
			waitMetric(`wxgate_config_reloads_total{result="error"}`, float64(badReloads))
			waitMetric("wxgate_config_last_reload_success", 0)
			placed := fmt.Sprintf("%s:%d: route[2] (broken).action", path, strings.Count(bad[:strings.Index(bad, `action = "maybe"`)], "\n")+1)
			if !strings.Contains(p.stderr.String(), placed) {
				t.Errorf("the log does not place the bad key at %s:\n%s", placed, p.stderr)
			}
			progress("after the refused file", 50)
		}
		write(reloadConfig(port, aport, sim.URL, ups[v].URL, "deny"))
		p.signal(t, syscall.SIGHUP)
		okReloads++
		waitMetric(`wxgate_config_reloads_total{result="ok"}`, float64(okReloads))
		reloaded.Store(int64(v))
		progress(fmt.Sprintf("after reload %d", v), 150)
		if s, _ := get(public + "/flip/x"); s != http.StatusForbidden {
			t.Errorf("/flip/x after reload %d: %d, want 403", v, s)
		}
	}
	close(stop)
	wg.Wait()

	total, failed, stale := browserN.Load(), len(browserFails), 0
	for i, h := range hs {
		total += h.n.Load()
		failed += len(h.fails)
		stale += len(h.stale)
		for _, f := range h.fails[:min(len(h.fails), 5)] {
			t.Errorf("client %d: failed: %s", i, f)
		}
		for _, s := range h.stale[:min(len(h.stale), 5)] {
			t.Errorf("client %d: an old route: %s", i, s)
		}
		if h.conns != 1 {
			t.Errorf("client %d opened %d connections, want 1: the gateway closed a keep-alive one", i, h.conns)
		}
		if got := h.version.Load(); got != versions-1 {
			t.Errorf("client %d ended on v%d, want v%d", i, got, versions-1)
		}
	}
	for _, f := range browserFails[:min(len(browserFails), 5)] {
		t.Errorf("logged-in browser: %s", f)
	}
	t.Logf("%d requests answered (%d by the logged-in browser), %d failed, %d from an older route; %d reloads on SIGHUP applied, %d refused",
		total, browserN.Load(), failed, stale, okReloads, badReloads)
	if failed > 0 {
		t.Errorf("%d requests failed", failed)
	}
	if got, _ := browser.whoami(); got != openid {
		t.Errorf("after the reloads the session answers %q, want %q", got, openid)
	}
	if strings.Contains(p.stderr.String(), reloadOASecret) {
		t.Error("the AppSecret is in the log")
	}
	p.stop(t)
}

// TestDevReload: `wxgate dev` reloads on SIGHUP too, keeping the secrets
// it drew for the simulator at the start (new ones would be refused as a
// change of the apps' secrets); sessions survive, and logins still work.
func TestDevReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildWxgate(t)
	dir := t.TempDir()
	port, aport := freePort(t), freePort(t)
	public, admin := "http://127.0.0.1:"+port, "http://127.0.0.1:"+aport
	p := startDev(t, bin, dir, gatewayEnv(port, public, "WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:"+aport))
	alice := newClient(t, public)
	openid := alice.login("alice")
	p.signal(t, syscall.SIGHUP)
	if !pollUntil(30*time.Second, func() bool { return adminMetric(admin, `wxgate_config_reloads_total{result="ok"}`) == 1 }) {
		t.Fatalf("no reload: error count %v\n%s", adminMetric(admin, `wxgate_config_reloads_total{result="error"}`), p.stderr)
	}
	if got, _ := alice.whoami(); got != openid {
		t.Fatalf("after the reload alice is %q, want %q", got, openid)
	}
	if newClient(t, public).login("bob") == "" {
		t.Fatal("no login after the reload")
	}
	p.stop(t)
}
