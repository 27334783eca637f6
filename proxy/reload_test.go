package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/syncbuf"
	"github.com/wxgate/wxgate/session"
)

// Reloading gateway.toml (issue 11 item 7): SIGHUP and [server]
// watch_config call Server.Reload; these tests call it, or let the watcher.

// config returns the gateway's config file as it is now.
func (e *env) config() string {
	e.t.Helper()
	b, err := os.ReadFile(e.confPath)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// writeConfig replaces the config file with conf the way editors and
// deploy tools do: a new file renamed over the old, so that a reader never
// sees half of it.
func (e *env) writeConfig(conf string) {
	e.t.Helper()
	tmp := e.confPath + ".new"
	if err := os.WriteFile(tmp, []byte(conf), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.confPath); err != nil {
		e.t.Fatal(err)
	}
}

// editConfig replaces old (which must be there) with new in the config file.
func (e *env) editConfig(old, new string) {
	e.t.Helper()
	conf := e.config()
	if !strings.Contains(conf, old) {
		e.t.Fatalf("the config has no %q", old)
	}
	e.writeConfig(strings.Replace(conf, old, new, 1))
}

// status GETs path with a client of its own and returns the status.
func (e *env) status(path string) int {
	e.t.Helper()
	resp, _ := e.browser(weChatUA).get(path, nil)
	return resp.StatusCode
}

// metric returns the value of the sample named by series (name and
// labels, as exposed), -1 if it is not exposed.
func (e *env) metric(series string) float64 {
	e.t.Helper()
	for _, l := range strings.Split(e.scrape(), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				e.t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return -1
}

const (
	reloadsOK    = `wxgate_config_reloads_total{result="ok"}`
	reloadsError = `wxgate_config_reloads_total{result="error"}`
	lastSuccess  = `wxgate_config_last_reload_success`
)

// lineOf is the line (from 1) of conf at which sub starts.
func lineOf(t *testing.T, conf, sub string) int {
	t.Helper()
	i := strings.Index(conf, sub)
	if i < 0 {
		t.Fatalf("no %q in the config", sub)
	}
	return strings.Count(conf[:i], "\n") + 1
}

// denyToPublic flips the shipped test route "denied" (/denied/**) from deny
// to public.
const (
	deniedDeny   = "name = \"denied\"\npath = \"/denied/**\"\naction = \"deny\""
	deniedPublic = "name = \"denied\"\npath = \"/denied/**\"\naction = \"public\""
)

// TestReloadChangesRoute: after a reload, new requests are decided by the
// new routes; the reload is counted and the last one marked a success.
func TestReloadChangesRoute(t *testing.T) {
	e := newEnv(t)
	if got := e.status("/denied/x"); got != http.StatusForbidden {
		t.Fatalf("before the reload: %d, want 403", got)
	}
	if e.metric(lastSuccess) != 1 || e.metric(reloadsOK) != 0 || e.metric(reloadsError) != 0 {
		t.Fatalf("at the start: %s", grepLines(e.scrape(), "wxgate_config_"))
	}
	e.editConfig(deniedDeny, deniedPublic)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.status("/denied/x"); got != http.StatusOK {
		t.Fatalf("after the reload: %d, want 200 (the route is public now)", got)
	}
	if e.metric(reloadsOK) != 1 || e.metric(lastSuccess) != 1 {
		t.Fatalf("after the reload: %s", grepLines(e.scrape(), "wxgate_config_"))
	}
	if ts := e.metric("wxgate_config_last_reload_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last reload timestamp %v", ts)
	}
}

// TestReloadRefusesBadFile: a file with a syntax error, a value Provision
// or Validate refuses, or an unknown key changes nothing; each problem is
// returned and logged with the file's line, and counted as an error.
func TestReloadRefusesBadFile(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvOpts(t, envOptions{log: &log})
	good := e.config()
	cases := []struct {
		name string
		add  string // appended to the file, with deny flipped to public
		at   string // where the problem's line is: the start of this text
		want string // in the problem
	}{
		{"syntax", "\n[[route]]\nname = \"broken\"\npath = \"/broken\n", "path = \"/broken", "toml:"},
		{"validate", "\n[[route]]\nname = \"stray\"\npath = \"/stray/**\"\nupstream = \"nowhere\"\n", "upstream = \"nowhere\"", `no [[upstream]] named "nowhere"`},
		{"policy", "\n[[route]]\nname = \"odd\"\npath = \"/odd/**\"\naction = \"allow\"\n", "action = \"allow\"", `action: "allow" is not public, login or deny`},
		{"unknown key", "\n[[route]]\nname = \"typo\"\npath = \"/typo/**\"\nacton = \"deny\"\n", "acton = ", "(typo).acton (did you mean action?)"},
		{"missing key", "\n[[upstream]]\nname = \"nourl\"\n", "[[upstream]]\nname = \"nourl\"", "url: required"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := strings.Replace(good, deniedDeny, deniedPublic, 1) + tc.add
			e.writeConfig(conf)
			err := e.gw.Reload()
			if err == nil {
				t.Fatal("Reload accepted the file")
			}
			line := lineOf(t, conf, tc.at)
			placed := fmt.Sprintf("%s:%d: ", e.confPath, line)
			if !strings.Contains(err.Error(), placed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Reload: %v\nwant a problem at %s with %q", err, placed, tc.want)
			}
			if !strings.Contains(log.String(), placed) || !strings.Contains(log.String(), "line="+strconv.Itoa(line)) {
				t.Errorf("the log does not place the problem at %s:\n%s", placed, log.String())
			}
			if got := e.status("/denied/x"); got != http.StatusForbidden {
				t.Errorf("after a refused reload: %d, want 403 from the running routes", got)
			}
			if got := e.metric(reloadsError); got != float64(i+1) {
				t.Errorf("%s = %v, want %d", reloadsError, got, i+1)
			}
			if e.metric(lastSuccess) != 0 || e.metric(reloadsOK) != 0 {
				t.Errorf("after a refused reload: %s", grepLines(e.scrape(), "wxgate_config_"))
			}
		})
	}
	// The same file fixed reloads.
	e.writeConfig(strings.Replace(good, deniedDeny, deniedPublic, 1))
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.status("/denied/x"); got != http.StatusOK || e.metric(lastSuccess) != 1 {
		t.Fatalf("after the fixed file: %d, %s", got, grepLines(e.scrape(), "wxgate_config_"))
	}
}

// TestReloadRefusesRestartOnlyKeys: a file that changes a key a reload
// cannot apply (listener, session store, signing key, the WeChat apps and
// their secrets...) is refused whole, naming each such key, even with a
// route change beside it; no value is shown.
func TestReloadRefusesRestartOnlyKeys(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvOpts(t, envOptions{log: &log})
	good := e.config()
	conf := strings.Replace(good, deniedDeny, deniedPublic, 1)
	conf = strings.Replace(conf, `log_level = "error"`, `log_level = "warn"`, 1)
	conf = strings.Replace(conf, "ttl = \"168h\"", "ttl = \"1h\"", 1)
	conf = strings.Replace(conf, "[server]\n", "[server]\nprefix = \"/_auth\"\n", 1)
	e.writeConfig(conf)
	err := e.gw.Reload()
	if err == nil {
		t.Fatal("Reload accepted new log_level, prefix and session ttl")
	}
	for _, key := range []string{"server.log_level", "server.prefix", "session.ttl"} {
		want := fmt.Sprintf("%s:%d: %s: changed; that takes a restart", e.confPath, lineOf(t, conf, strings.TrimPrefix(strings.TrimPrefix(key, "server."), "session.")+" = "), key)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Reload: %v\nwant %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "/_auth") || strings.Contains(err.Error(), "1h") {
		t.Errorf("the refusal shows values: %v", err)
	}
	if got := e.status("/denied/x"); got != http.StatusForbidden {
		t.Fatalf("the route changed beside a restart-only key: %d, want 403", got)
	}
	if e.status("/_wxgate/jwks.json") != http.StatusOK {
		t.Fatal("the prefix moved")
	}

	// A rotated AppSecret (the same secret_env, another value) is not
	// applied by a reload either: the app token holder keeps the old one.
	e.writeConfig(strings.Replace(good, deniedDeny, deniedPublic, 1))
	t.Setenv("WXGATE_TEST_OA_SECRET", "rotated-oa-secret")
	err = e.gw.Reload()
	if err == nil || !strings.Contains(err.Error(), "wechat.official_account: a secret or file it names reads differently now") {
		t.Fatalf("Reload with a rotated secret: %v", err)
	}
	if strings.Contains(err.Error(), "rotated-oa-secret") || strings.Contains(log.String(), "rotated-oa-secret") || strings.Contains(log.String(), oaSecret) {
		t.Fatalf("a secret in the error or the log: %v\n%s", err, log.String())
	}
	t.Setenv("WXGATE_TEST_OA_SECRET", oaSecret)

	// A key appended to the signing key file (step 1 of a rotation) is
	// read only at a start: the reload says so instead of succeeding
	// with the old keys still published.
	keys, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := session.GenerateKey(session.ES256)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.keyFile, append(slices.Clone(keys), extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	err = e.gw.Reload()
	if err == nil || !strings.Contains(err.Error(), "tokens.signing_key_file: its keys changed") {
		t.Fatalf("Reload with a key appended to the signing key file: %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(log.String(), "PRIVATE KEY") {
		t.Fatalf("key material in the error or the log: %v", err)
	}
	if err := os.WriteFile(e.keyFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.status("/denied/x"); got != http.StatusOK {
		t.Fatalf("after an acceptable file: %d, want 200", got)
	}
}

// TestReloadRefusesLogChanges: [log] is read once, when the gateway
// starts; a reload that changes it (users = "none", for privacy) is
// refused, not reported as reloaded while the access lines still show
// users.
func TestReloadRefusesLogChanges(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvOpts(t, envOptions{log: &log, logTOML: "users = \"plain\""})
	for _, tc := range []struct{ old, new, key string }{
		{`users = "plain"`, `users = "none"`, "log.users"},
		{`users = "plain"`, "users = \"plain\"\nformat = \"text\"", "log.format"},
	} {
		good := e.config()
		e.editConfig(tc.old, tc.new)
		err := e.gw.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.key+": changed; that takes a restart") {
			t.Errorf("Reload with %s changed: %v, want it refused naming %s", tc.key, err, tc.key)
		}
		e.writeConfig(good)
	}
}

// TestReloadKeepsSessionsAndConnections: a reload that moves an upstream
// to another address lets the request in flight to the old one finish,
// sends new requests to the new one, keeps the client's keep-alive
// connection, and keeps the browser's session.
func TestReloadKeepsSessionsAndConnections(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/public/hold" {
			arrived <- struct{}{}
			<-release
			_, _ = io.WriteString(w, "old, held")
			return
		}
		w.Header().Set("X-Seen-Openid", r.Header.Get("X-Wechat-Openid"))
		_, _ = io.WriteString(w, "old")
	}))
	defer old.Close()
	defer close(release)
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Openid", r.Header.Get("X-Wechat-Openid"))
		_, _ = io.WriteString(w, "new")
	}))
	defer moved.Close()
	e := newEnvOpts(t, envOptions{appUpstream: old.URL})

	b := e.browser(weChatUA)
	// A transport of its own: the held request below must not take its
	// idle connection.
	b.c.Transport = &http.Transport{}
	b.login("/home", "reloader")
	resp, body := b.get("/home", nil)
	openid := resp.Header.Get("X-Seen-Openid")
	if resp.StatusCode != http.StatusOK || body != "old" || openid == "" {
		t.Fatalf("logged in, before the reload: %d %q openid %q", resp.StatusCode, body, openid)
	}
	held := make(chan string, 1)
	go func() {
		resp, body := e.browser(weChatUA).get("/public/hold", nil)
		held <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	<-arrived

	e.editConfig(old.URL, moved.URL)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/home", nil)
	req.Header.Set("User-Agent", weChatUA)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != "new" || resp.Header.Get("X-Seen-Openid") != openid {
		t.Fatalf("after the reload: %d %q openid %q, want 200 \"new\" with %q", resp.StatusCode, got, resp.Header.Get("X-Seen-Openid"), openid)
	}
	if !reused {
		t.Error("the browser's keep-alive connection did not survive the reload")
	}
	release <- struct{}{}
	select {
	case h := <-held:
		if h != "200 old, held" {
			t.Fatalf("the request in flight during the reload: %q, want 200 from the old upstream", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never finished")
	}
}

// TestReloadConcurrent: reloads racing with each other, with rewrites of
// the file and with requests are safe (run with -race); every request is
// decided by one whole config, and the last reload's file is the one that
// serves.
func TestReloadConcurrent(t *testing.T) {
	e := newEnv(t)
	deny := e.config()
	public := strings.Replace(deny, deniedDeny, deniedPublic, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	bad := make(chan string, 100)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(e.url + "/denied/x")
				if err != nil {
					bad <- err.Error()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusForbidden {
					bad <- resp.Status
				}
			}
		}()
	}
	var reloaders sync.WaitGroup
	for i := 0; i < 4; i++ {
		reloaders.Add(1)
		go func() {
			defer reloaders.Done()
			for j := 0; j < 10; j++ {
				if err := e.gw.Reload(); err != nil {
					bad <- err.Error()
				}
			}
		}()
	}
	// Files alternate while the reloads run; each is written whole
	// (renamed), so each read is one or the other.
	for j := 0; j < 20; j++ {
		e.writeConfig(map[bool]string{true: public, false: deny}[j%2 == 0])
	}
	reloaders.Wait()
	e.writeConfig(deny)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Error(b)
	}
	if got := e.status("/denied/x"); got != http.StatusForbidden {
		t.Fatalf("after the last reload (deny): %d", got)
	}
	if got := e.metric(reloadsOK); got != 41 {
		t.Fatalf("%s = %v, want 41", reloadsOK, got)
	}
}

// TestWatchConfig: with [server] watch_config the gateway reloads when the
// file's content changes, whether written in place, renamed over, or
// swapped behind a symlink as a Kubernetes ConfigMap is; a bad file is
// refused once and the running config stays.
func TestWatchConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the watcher's ticks")
	}
	e := newEnvOpts(t, envOptions{serverKeys: "watch_config = true"})
	deny := e.config()
	public := strings.Replace(deny, deniedDeny, deniedPublic, 1)
	waitStatus := func(how string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for e.status("/denied/x") != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: /denied/x never answered %d", how, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// In place: truncated, then written.
	if err := os.WriteFile(e.confPath, []byte(public), 0o600); err != nil {
		t.Fatal(err)
	}
	waitStatus("written in place", http.StatusOK)
	e.writeConfig(deny)
	waitStatus("renamed over", http.StatusForbidden)

	// Kubernetes: the path is a symlink through ..data, which is swapped
	// to a new directory.
	dir := filepath.Dir(e.confPath)
	for i, conf := range []string{deny, public} {
		v := filepath.Join(dir, "..v"+strconv.Itoa(i))
		if err := os.Mkdir(v, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v, "gateway.toml"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(target, name string) {
		t.Helper()
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	swap("..v0", "..data")
	swap(filepath.Join("..data", "gateway.toml"), filepath.Base(e.confPath)) // same content: deny
	swap("..v1", "..data")
	waitStatus("..data swapped", http.StatusOK)

	before := e.metric(reloadsError)
	swap("..v0", "..data")
	waitStatus("..data swapped back", http.StatusForbidden)
	if err := os.WriteFile(filepath.Join(dir, "..v0", "gateway.toml"), []byte(deny+"\n[[route]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for e.metric(reloadsError) != before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("a bad file was never refused: %s", grepLines(e.scrape(), "wxgate_config_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.status("/denied/x"); got != http.StatusForbidden {
		t.Fatalf("after the bad file: %d, want 403 from the running config", got)
	}
	if regexp.MustCompile(`wxgate_config_last_reload_success 0`).FindString(e.scrape()) == "" {
		t.Fatal("the refused file is not shown in wxgate_config_last_reload_success")
	}
}

// TestReloadKeepsUpstreamPool: an upstream whose keys a reload leaves
// alone keeps its pooled connections; one whose keys change gets a new
// pool, and the old pool's idle connection is closed.
func TestReloadKeepsUpstreamPool(t *testing.T) {
	var mu sync.Mutex
	states := map[http.ConnState]int{}
	up := httptest.NewUnstartedServer(http.HandlerFunc(upstreamHandler))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		states[s]++
	}
	up.Start()
	defer up.Close()
	count := func(s http.ConnState) int {
		mu.Lock()
		defer mu.Unlock()
		return states[s]
	}
	e := newEnvOpts(t, envOptions{appUpstream: up.URL, appKeys: `keepalive_idle = "1m"`})
	if got := e.status("/public/a"); got != http.StatusOK {
		t.Fatalf("first request: %d", got)
	}
	e.editConfig(deniedDeny, deniedPublic)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.status("/public/b"); got != http.StatusOK || count(http.StateNew) != 1 {
		t.Fatalf("after a reload that left the upstream alone: %d, %d connections opened, want 1", got, count(http.StateNew))
	}
	e.editConfig(`keepalive_idle = "1m"`, `keepalive_idle = "50s"`)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the replaced pool's idle connection closed", func() bool { return count(http.StateClosed) == 1 })
	if got := e.status("/public/c"); got != http.StatusOK || count(http.StateNew) != 2 {
		t.Fatalf("after the upstream changed: %d, %d connections opened, want 2", got, count(http.StateNew))
	}
}

// TestReloadAllowedRedirectHosts: [server] allowed_redirect_hosts changes
// with a reload: a login may return to a host added, not before.
func TestReloadAllowedRedirectHosts(t *testing.T) {
	e := newEnv(t)
	const target = "https://fresh.example/x"
	lands := func() string {
		b := e.browser(weChatUA)
		start := e.url + "/_wxgate/start?rd=" + url.QueryEscape(target)
		return b.expectRedirect(b.authorize(b.expectRedirect(start), "alice", "allow"))
	}
	if got := lands(); got != e.url+"/" {
		t.Fatalf("before the reload the login returns to %q, want /", got)
	}
	e.editConfig(`allowed_redirect_hosts = ["good.example.com", ".trusted.example"]`, `allowed_redirect_hosts = ["good.example.com", ".trusted.example", "fresh.example"]`)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := lands(); got != target {
		t.Fatalf("after the reload the login returns to %q, want %s", got, target)
	}
}

// TestReloadSyntaxErrorHidesSecret: an AppSecret pasted without its quotes
// is a TOML syntax error, and the decoder's message quotes what it found
// of the bare value ("expected value but found ..."); the refusal, logged
// and returned, must place the problem without showing any of it.
func TestReloadSyntaxErrorHidesSecret(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvOpts(t, envOptions{log: &log})
	good := e.config()
	for _, secret := range []string{"integration-oa-passw0rd", "d41d8cd98f00b204e9800998ecf8427e", "0123456789abcdef0123456789abcdef"} {
		conf := strings.Replace(good, `secret_env = "WXGATE_TEST_OA_SECRET"`, "secret = "+secret, 1)
		e.writeConfig(conf)
		err := e.gw.Reload()
		if err == nil {
			t.Fatalf("Reload accepted the unquoted secret %s", secret)
		}
		placed := fmt.Sprintf("%s:%d: ", e.confPath, lineOf(t, conf, "secret = "+secret))
		if !strings.Contains(err.Error(), placed) || !strings.Contains(err.Error(), "wechat.official_account.secret") {
			t.Errorf("Reload: %v\nwant the problem placed at %s naming the key", err, placed)
		}
		for i := 0; i+6 <= len(secret); i++ {
			if part := secret[i : i+6]; strings.Contains(err.Error(), part) || strings.Contains(log.String(), part) {
				t.Fatalf("%q of the secret in the refusal or the log: %v\n%s", part, err, log.String())
			}
		}
	}
}

// TestReloadKeepsOpenWebSocket: a reload that moves an upstream leaves a
// WebSocket open to the old address alone (it is a request in flight, as
// long as it lasts), counted until it closes; new handshakes go to the new
// address.
func TestReloadKeepsOpenWebSocket(t *testing.T) {
	old, moved := newWSUpstream(t), newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: old.URL})
	conn, resp, body := wsDial(t, e, "/public/echo", nil)
	if conn == nil {
		t.Fatalf("handshake: %d %q", resp.StatusCode, body)
	}
	e.editConfig(old.URL, moved.URL)
	if err := e.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	echoes(t, conn)
	conn2, resp, body := wsDial(t, e, "/public/echo", nil)
	if conn2 == nil {
		t.Fatalf("handshake after the reload: %d %q", resp.StatusCode, body)
	}
	echoes(t, conn2)
	if old.handshakes.Load() != 1 || moved.handshakes.Load() != 1 {
		t.Errorf("handshakes: old upstream %d, moved %d; want 1 each", old.handshakes.Load(), moved.handshakes.Load())
	}
	if got := e.metric(`wxgate_websockets_open{upstream="app"}`); got != 2 {
		t.Errorf("wxgate_websockets_open = %v with a socket to each address, want 2", got)
	}
	conn.Close()
	<-old.ended
	waitUntil(t, "the old socket to be counted closed", func() bool {
		return e.metric(`wxgate_websockets_open{upstream="app"}`) == 1
	})
}

// TestReloadUpstreamURLHidesPassword: an upstream URL refused for its
// path or its form is named in the refusal without the password its user
// part carries.
func TestReloadUpstreamURLHidesPassword(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvOpts(t, envOptions{log: &log})
	good := e.config()
	for _, url := range []string{"http://deploy:hunter2pw@127.0.0.1:1/base", "http://deploy:hunter2pw@127.0.0.1:1:2", "ftp://deploy:hunter2pw@127.0.0.1:1"} {
		e.writeConfig(strings.Replace(good, `url = "http://127.0.0.1:1"`, `url = "`+url+`"`, 1))
		err := e.gw.Reload()
		if err == nil || !strings.Contains(err.Error(), "upstream[1] (down).url") {
			t.Fatalf("Reload with the URL %s: %v, want upstream[1] (down).url refused", url, err)
		}
		if strings.Contains(err.Error(), "hunter2pw") || strings.Contains(log.String(), "hunter2pw") {
			t.Fatalf("the password in the refusal or the log: %v\n%s", err, log.String())
		}
	}
}
