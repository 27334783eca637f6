package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

const (
	oaID      = "wx00000000000000a1"
	oaSecret  = "integration-oa-secret"
	mpID      = "wx00000000000000c3"
	mpSecret  = "integration-mp-secret"
	appID     = "wx00000000000000d4"
	appSecret = "integration-app-secret"
	webID     = "wx00000000000000b2"
	webSecret = "integration-web-secret"
	weChatUA  = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Mobile Safari/537.36 MicroMessenger/8.0.49.2600 NetType/WIFI Language/zh_CN"
)

// echo is what the test upstream answers: exactly what it received.
type echo struct {
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Headers map[string][]string `json:"headers"`
}

// env is one gateway, one simulator and one upstream on real sockets.
type env struct {
	t        testing.TB
	sim      *wechatsim.Server
	simURL   string
	gw       *proxy.Server
	url      string // the gateway's public URL
	adminURL string
	upstream *httptest.Server
	keyFile  string
	// confPath is the gateway's gateway.toml, which Reload reads again.
	confPath string
	// offset is added to real time to give the gateway's clock.
	offset atomic.Int64
}

// clock is the gateway's clock: real time plus what advance added.
func (e *env) clock() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

// advance moves the gateway's clock forward.
func (e *env) advance(d time.Duration) { e.offset.Add(int64(d)) }

// baseTOML is the test gateway's config; its %s are filled in newEnvOpts.
const baseTOML = `
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:1"
public_url = "%s"
allowed_redirect_hosts = ["good.example.com", ".trusted.example"]
log_level = "error"
admin_token_env = "%s"

[session]
ttl = "%s"
idle_ttl = "%s"
refresh_ahead = "%s"
%s

[wechat]
api_base = "%s"
open_base = "%s"
timeout = "500ms"

[wechat.official_account]
appid = "` + oaID + `"
secret_env = "WXGATE_TEST_OA_SECRET"
verify_file = "%s"

[wechat.miniprogram]
appid = "` + mpID + `"
secret_env = "WXGATE_TEST_MP_SECRET"

[wechat.app]
appid = "` + appID + `"
secret_env = "WXGATE_TEST_APP_SECRET"

[tokens]
signing_key_file = "%s"
reuse_grace = "%s"

[[upstream]]
name = "app"
url = "%s"

[[upstream]]
name = "down"
url = "http://127.0.0.1:1"
timeout = "1s"

[[upstream]]
name = "slow"
url = "%s"
timeout = "300ms"

[[route]]
name = "internal"
host = "internal.localhost"
action = "deny"

[[route]]
name = "public"
path = "/public/**"
action = "public"

[[route]]
name = "profile"
path = "/profile/**"
scope = "userinfo"

[[route]]
name = "api"
path = "/api/**"
api = true

[[route]]
name = "down"
path = "/down/**"
action = "public"
upstream = "down"

[[route]]
name = "slow"
path = "/slow/**"
action = "public"
upstream = "slow"

[[route]]
name = "phone"
path = "/phone/**"
api = true
pass_phone = true

[[route]]
name = "wxtoken"
path = "/wxtoken/**"
api = true
pass_wechat_token = true

[[route]]
name = "denied"
path = "/denied/**"
action = "deny"

[[route]]
name = "vip"
path = "/vip/**"
allow_unionids = ["u-nobody-logs-in-as"]
`

// envOptions change newEnv's gateway.
type envOptions struct {
	reuseGrace   string // [tokens] reuse_grace; default "2s"
	sessionTTL   string // [session] ttl and idle_ttl; default "168h"
	refreshAhead string // [session] refresh_ahead; default "0s" (off)

	// For replicas of one site: the simulator, public URL, signing key,
	// clock and session store they share.
	sim       *wechatsim.Server
	simURL    string
	publicURL string
	keyFile   string
	clock     func() time.Time
	redisAddr string // store = "redis" at this address
	// redisTOML, if set, is the whole [session.redis] section body instead
	// of redisAddr's (a Cluster, Sentinels).
	redisTOML string
	adminEnv  string // [server] admin_token_env
	// maxPending and maxPendingPerClient set [session] max_pending and
	// max_pending_per_client (0: the defaults).
	maxPending, maxPendingPerClient int
	// maxLoginsPerUser sets [session] max_logins_per_user (0: the default).
	maxLoginsPerUser int
	// appUpstream, if set, replaces the URL of the upstream named "app"
	// (every route's but down's and slow's).
	appUpstream string
	// appKeys are more TOML lines for the upstream named "app"
	// ("keepalive_idle = \"1s\"").
	appKeys string
	// policyKeys are TOML lines of a [policy] table.
	policyKeys string
	// log, if set, receives the gateway's log at level warn and above.
	log io.Writer
	// serverKeys are more TOML lines for [server] ("pprof = true"), and
	// sessionKeys for [session]. In them and in publicURL, {port} is the
	// public listener's port.
	serverKeys, sessionKeys string
	// logLevel is the level of log; zero (info) means warn: use debug to
	// see every line.
	logLevel slog.Level
	// store, if set, is the gateway's session store (proxy.Options.Store).
	store session.Store
	// website configures [wechat.website]: desktop browsers get the QR
	// login.
	website bool
	// logTOML, if set, is a [log] section; the log (o.log, which must be
	// set) is then made by proxy.NewLogger, as wxgate serve makes it, at
	// debug.
	logTOML string
}

func newEnv(t testing.TB) *env { return newEnvOpts(t, envOptions{}) }

func newEnvOpts(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.reuseGrace == "" {
		o.reuseGrace = "2s"
	}
	if o.sessionTTL == "" {
		o.sessionTTL = "168h"
	}
	if o.refreshAhead == "" {
		o.refreshAhead = "0s"
	}
	t.Setenv("WXGATE_TEST_OA_SECRET", oaSecret)
	t.Setenv("WXGATE_TEST_MP_SECRET", mpSecret)
	t.Setenv("WXGATE_TEST_APP_SECRET", appSecret)
	t.Setenv("WXGATE_TEST_WEB_SECRET", webSecret)
	e := &env{t: t}
	e.upstream = httptest.NewServer(http.HandlerFunc(upstreamHandler))
	t.Cleanup(e.upstream.Close)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	e.adminURL = "http://" + admin.Addr().String()

	if o.sim != nil {
		e.sim, e.simURL = o.sim, o.simURL
	} else {
		e.sim, e.simURL = newSim(t)
	}

	dir := t.TempDir()
	verify := filepath.Join(dir, "MP_verify_test123.txt")
	if err := os.WriteFile(verify, []byte("test123"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.keyFile = filepath.Join(dir, "signing.pem")
	if o.keyFile != "" {
		e.keyFile = o.keyFile
	}
	port := strings.TrimPrefix(e.url, "http://127.0.0.1:")
	o.publicURL = strings.ReplaceAll(o.publicURL, "{port}", port)
	o.serverKeys = strings.ReplaceAll(o.serverKeys, "{port}", port)
	o.sessionKeys = strings.ReplaceAll(o.sessionKeys, "{port}", port)
	public := e.url
	if o.publicURL != "" {
		public = o.publicURL
	}
	store := ""
	if o.redisAddr != "" && o.redisTOML == "" {
		o.redisTOML = fmt.Sprintf("addrs = [%q]\ntimeout = \"300ms\"\n", o.redisAddr)
	}
	if o.redisTOML != "" {
		t.Setenv("WXGATE_TEST_SESSION_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
		store = "store = \"redis\"\nencryption_key_env = \"WXGATE_TEST_SESSION_KEY\"\n[session.redis]\n" + o.redisTOML
	}
	// Keys of [session] itself go before [session.redis].
	if o.maxPendingPerClient > 0 {
		store = fmt.Sprintf("max_pending_per_client = %d\n", o.maxPendingPerClient) + store
	}
	if o.maxPending > 0 {
		store = fmt.Sprintf("max_pending = %d\n", o.maxPending) + store
	}
	if o.maxLoginsPerUser > 0 {
		store = fmt.Sprintf("max_logins_per_user = %d\n", o.maxLoginsPerUser) + store
	}
	if o.sessionKeys != "" {
		store = o.sessionKeys + "\n" + store
	}
	path := filepath.Join(dir, "gateway.toml")
	appURL := e.upstream.URL
	if o.appUpstream != "" {
		appURL = o.appUpstream
	}
	conf := fmt.Sprintf(baseTOML, public, o.adminEnv, o.sessionTTL, o.sessionTTL, o.refreshAhead, store, e.simURL, e.simURL, verify, e.keyFile, o.reuseGrace, appURL, slow.URL)
	if o.policyKeys != "" {
		conf += "\n[policy]\n" + o.policyKeys + "\n"
	}
	if o.appKeys != "" {
		conf = strings.Replace(conf, "name = \"app\"\n", "name = \"app\"\n"+o.appKeys+"\n", 1)
	}
	if o.serverKeys != "" {
		conf = strings.Replace(conf, "[server]\n", "[server]\n"+o.serverKeys+"\n", 1)
	}
	if o.website {
		conf += "\n[wechat.website]\nappid = \"" + webID + "\"\nsecret_env = \"WXGATE_TEST_WEB_SECRET\"\n"
	}
	if o.logTOML != "" {
		conf = strings.Replace(conf, `log_level = "error"`, `log_level = "debug"`, 1) + "\n[log]\n" + o.logTOML + "\n"
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e.confPath = path
	cfg, _, err := proxy.LoadConfig(path, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.log != nil {
		level := o.logLevel
		if level == 0 {
			level = slog.LevelWarn
		}
		log = slog.New(slog.NewTextHandler(o.log, &slog.HandlerOptions{Level: level}))
	}
	if o.logTOML != "" {
		log = proxy.NewLogger(o.log, cfg, proxy.LogJSON)
	}
	clock := e.clock
	if o.clock != nil {
		clock = o.clock
	}
	e.gw, err = proxy.New(cfg, proxy.Options{Logger: log, Now: clock, Store: o.store})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.gw.Serve(ln, admin) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.gw.Shutdown(ctx)
	})
	return e
}

// newSim starts a simulator with the test apps.
func newSim(t testing.TB) (*wechatsim.Server, string) {
	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: webID, Secret: webSecret, Type: wechatsim.Website, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1"},
		wechatsim.App{AppID: appID, Secret: appSecret, Type: wechatsim.MobileApp, OpenPlatformID: "open-1"},
	)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func upstreamHandler(w http.ResponseWriter, r *http.Request) {
	h := map[string][]string{}
	for k, v := range r.Header {
		h[k] = v
	}
	h["Host"] = []string{r.Host}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echo{Method: r.Method, URI: r.RequestURI, Headers: h})
}

// browser is a cookie-keeping client that does not follow redirects, so
// each hop can be checked.
type browser struct {
	e    *env
	c    *http.Client
	ua   string
	lang string
}

func (e *env) browser(ua string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, ua: ua, c: &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// browserFrom is a browser whose connections come from the local address
// ip (any of 127.0.0.0/8 works on loopback): another client to the gateway.
func (e *env) browserFrom(ua, ip string) *browser {
	b := e.browser(ua)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	b.c.Transport = &http.Transport{DialContext: d.DialContext}
	return b
}

// scrape returns the admin listener's /metrics.
func (e *env) scrape() string {
	e.t.Helper()
	resp, err := http.Get(e.adminURL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (b *browser) do(method, rawURL string, body io.Reader, hdr map[string]string) *http.Response {
	b.e.t.Helper()
	if strings.HasPrefix(rawURL, "/") {
		rawURL = b.e.url + rawURL
	}
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("User-Agent", b.ua)
	if b.lang != "" {
		req.Header.Set("Accept-Language", b.lang)
	}
	for k, v := range hdr {
		req.Header[k] = []string{v} // exact spelling, not canonicalized
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return resp
}

// get fetches and reads a URL, returning the response with its body read.
func (b *browser) get(rawURL string, hdr map[string]string) (*http.Response, string) {
	b.e.t.Helper()
	resp := b.do(http.MethodGet, rawURL, nil, hdr)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// expectRedirect fetches rawURL and returns its Location, resolved.
func (b *browser) expectRedirect(rawURL string) string {
	b.e.t.Helper()
	resp, body := b.get(rawURL, nil)
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		b.e.t.Fatalf("GET %s: status %d, want a redirect; body: %.300s", rawURL, resp.StatusCode, body)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		b.e.t.Fatal(err)
	}
	return loc.String()
}

// authorize answers the simulator's authorize page for user with decision
// and returns where WeChat sends the browser (the callback URL).
func (b *browser) authorize(authURL, user, decision string) string {
	b.e.t.Helper()
	u := strings.TrimSuffix(authURL, "#wechat_redirect") + "&sim_user=" + user + "&sim_decision=" + decision
	return b.expectRedirect(u)
}

// login runs the whole flow from a protected path and returns the URL the
// callback sends the browser to.
func (b *browser) login(path, user string) string {
	b.e.t.Helper()
	start := b.expectRedirect(path)
	auth := b.expectRedirect(start)
	cb := b.authorize(auth, user, "allow")
	return b.expectRedirect(cb)
}

// upstreamView fetches path through the gateway and decodes what the
// upstream received.
func (b *browser) upstreamView(path string, hdr map[string]string) echo {
	b.e.t.Helper()
	resp, body := b.get(path, hdr)
	if resp.StatusCode != http.StatusOK {
		b.e.t.Fatalf("GET %s: status %d, want 200; body %.300s", path, resp.StatusCode, body)
	}
	var got echo
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		b.e.t.Fatalf("GET %s: upstream answer %q: %v", path, body, err)
	}
	return got
}

func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.e.url)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func (b *browser) setCookie(name, value string) {
	u, _ := url.Parse(b.e.url)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

func (e *env) user(name string) wechatsim.User {
	u, ok := e.sim.User(oaID, name)
	if !ok {
		e.t.Fatalf("no sim user %s", name)
	}
	return u
}
