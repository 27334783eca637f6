package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// secrets collects every secret and token a run hands out, seen from both
// sides: what the simulator answers the gateway and what the gateway
// answers its clients.
type secrets struct {
	mu   sync.Mutex
	seen map[string]string // value -> what it is
}

func (s *secrets) add(what, v string) {
	if len(v) < 6 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]string{}
	}
	s.seen[v] = what
}

// tokenKeys are the JSON keys whose values are secrets, wherever they
// appear.
var tokenKeys = map[string]bool{"access_token": true, "refresh_token": true, "session_key": true, "code": true, "ticket": true}

func (s *secrets) fromJSON(body []byte) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if str, ok := x.(string); ok && tokenKeys[k] {
					s.add(k, str)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
}

func (s *secrets) fromResponse(h http.Header, body []byte) {
	for _, line := range h.Values("Set-Cookie") {
		name, rest, _ := strings.Cut(line, "=")
		val, _, _ := strings.Cut(rest, ";")
		s.add("cookie "+name, strings.Trim(val, `"`))
	}
	if loc, err := url.Parse(h.Get("Location")); err == nil {
		for _, k := range []string{"code", "ticket"} {
			s.add("redirect "+k, loc.Query().Get(k))
		}
	}
	s.fromJSON(body)
}

// RoundTrip records what the gateway (or the simulator's pages) answer a
// client.
type recordingTransport struct{ s *secrets }

func (rt recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	rt.s.fromResponse(resp.Header, body)
	// Forms carry the logout token.
	for _, m := range regexp.MustCompile(`name="token" value="([^"]+)"`).FindAllSubmatch(body, -1) {
		rt.s.add("logout token", string(m[1]))
	}
	return resp, nil
}

// teeWriter keeps a copy of what the simulator answers the gateway.
type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.ResponseWriter.Write(p)
}

// loggedRun is a gateway whose log and every secret handed out are kept.
type loggedRun struct {
	e   *env
	log *lockedBuffer
	s   *secrets
}

func newLoggedRun(t *testing.T, logTOML string) *loggedRun {
	t.Setenv("WXGATE_TEST_ADMIN", adminSecret)
	r := &loggedRun{log: &lockedBuffer{}, s: &secrets{}}
	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: webID, Secret: webSecret, Type: wechatsim.Website, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1"},
		wechatsim.App{AppID: appID, Secret: appSecret, Type: wechatsim.MobileApp, OpenPlatformID: "open-1"},
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tw := &teeWriter{ResponseWriter: w}
		sim.ServeHTTP(tw, req)
		r.s.fromResponse(w.Header(), tw.buf.Bytes())
	}))
	t.Cleanup(srv.Close)
	r.e = newEnvOpts(t, envOptions{sim: sim, simURL: srv.URL, log: r.log, logTOML: logTOML,
		adminEnv: "WXGATE_TEST_ADMIN", website: true, reuseGrace: "1s"})
	for what, v := range map[string]string{"oa secret": oaSecret, "mp secret": mpSecret, "app secret": appSecret,
		"web secret": webSecret, "admin secret": adminSecret} {
		r.s.add(what, v)
	}
	pemKey, err := os.ReadFile(r.e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(pemKey), "\n") {
		if !strings.HasPrefix(line, "-----") && !strings.Contains(line, ":") {
			r.s.add("signing key PEM", strings.TrimSpace(line))
		}
	}
	return r
}

func (r *loggedRun) browser(ua string) *browser {
	b := r.e.browser(ua)
	b.c.Transport = recordingTransport{r.s}
	return b
}

func (r *loggedRun) api() *api {
	return &api{e: r.e, c: &http.Client{Timeout: 10 * time.Second, Transport: recordingTransport{r.s}}}
}

// everyFlow runs every login flow, refresh, revocation, logout, the admin
// API, bearer calls, refusals and WeChat errors through r's gateway.
func (r *loggedRun) everyFlow(t *testing.T) {
	e := r.e
	// Official account, then a sns token refresh once its access token
	// has expired.
	oa := r.browser(weChatUA)
	oa.login("/", "alice")
	oa.upstreamView("/x", nil)
	e.advance(2*time.Hour + time.Minute)
	e.sim.Advance(2*time.Hour + time.Minute)
	oa.upstreamView("/x", nil)
	// QR.
	qr := r.browser(desktopUA)
	qr.qrLogin("/", "bob")
	// Mini program, bearer calls, refresh, reuse, revocation.
	a := r.api()
	pair := a.mpLogin("carol")
	r.s.fromJSON(mustMarshal(pair))
	a.view("/api/x", pair["access_token"].(string))
	status, next, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": pair["refresh_token"]}, "")
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, next)
	}
	e.advance(2 * time.Second)
	if status, m, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": pair["refresh_token"]}, ""); status != http.StatusUnauthorized {
		t.Fatalf("reused refresh token: %d %v", status, m)
	}
	pair2 := a.mpLogin("carol")
	if status, m, _ := a.post("/_wxgate/token/revoke", map[string]any{"refresh_token": pair2["refresh_token"]}, ""); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, m)
	}
	// An invalid bearer token and a forbidden host are denials.
	if status, _, _ := a.get("/api/x", pair2["access_token"].(string)+"x"); status != http.StatusUnauthorized {
		t.Fatalf("bad bearer: %d", status)
	}
	// The mobile app.
	app := a.post
	code := e.simPost("/_sim/code", map[string]string{"appid": appID, "user": "dave"})["code"]
	if status, m, _ := app("/_wxgate/app/login", map[string]any{"code": code}, ""); status != http.StatusOK {
		t.Fatalf("app login: %d %v", status, m)
	}
	// A user's bad mini-program code, a used one, and WeChat failing.
	if status, m, _ := a.post("/_wxgate/miniprogram/login", map[string]any{"code": "0123456789abcdef0123456789abcdef"}, ""); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("bad code: %d %v", status, m)
	}
	e.sim.InjectFault(wechatsim.Fault{Path: "/sns/jscode2session", Errcode: -1, Times: 10})
	used := e.simPost("/_sim/code", map[string]string{"appid": mpID, "user": "erin"})["code"].(string)
	r.s.add("code", used)
	if status, m, _ := a.post("/_wxgate/miniprogram/login", map[string]any{"code": used}, ""); status < 500 {
		t.Fatalf("WeChat busy: %d %v", status, m)
	}
	// The admin API: the app token, then revoking alice everywhere.
	req, _ := http.NewRequest(http.MethodGet, e.adminURL+"/app-token?appid="+mpID, nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	if resp, err := (&http.Client{Transport: recordingTransport{r.s}}).Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin app-token: %v %v", resp, err)
	}
	if status, m := e.adminDo(http.MethodDelete, "/sessions?unionid="+e.user("alice").UnionID); status != http.StatusOK {
		t.Fatalf("DELETE /sessions: %d %v", status, m)
	}
	// Logout, through the confirm form.
	_, body := qr.get("/_wxgate/logout?rd=/public/bye", nil)
	token := regexp.MustCompile(`name="token" value="([^"]+)"`).FindStringSubmatch(body)
	if token == nil {
		t.Fatalf("no logout form: %.300s", body)
	}
	resp := qr.do(http.MethodPost, "/_wxgate/logout", strings.NewReader("rd=%2Fpublic%2Fbye&token="+url.QueryEscape(token[1])),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	// A browser without a login, refused.
	anon := r.browser(weChatUA)
	anon.expectRedirect("/x")
	req, _ = http.NewRequest(http.MethodGet, e.url+"/x", nil)
	req.Host = "internal.localhost"
	if resp, err := anon.c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("deny route: %v %v", resp, err)
	}
}

// parsedLine is one log line's keys and values, whatever the format.
type parsedLine map[string]string

func parseLines(t *testing.T, format, log string) []parsedLine {
	t.Helper()
	var out []parsedLine
	textAttr := regexp.MustCompile(`([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S*)`)
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		p := parsedLine{}
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("not a JSON line: %q", line)
			}
			for k, v := range m {
				b, _ := json.Marshal(v)
				p[k] = strings.Trim(string(b), `"`)
			}
		} else {
			for _, m := range textAttr.FindAllStringSubmatch(line, -1) {
				p[m[1]] = strings.Trim(m[2], `"`)
			}
			if p["level"] == "" {
				t.Fatalf("not a text line: %q", line)
			}
		}
		out = append(out, p)
	}
	return out
}

// TestLogsOfAFullRun runs every flow with the log in JSON (users hashed)
// and in text (users plain), and reads the log as an operator would: no
// secret or token anywhere, one access line per request with its keys,
// the auth events, and no ERROR for what a client did.
func TestLogsOfAFullRun(t *testing.T) {
	for _, tc := range []struct{ format, users string }{{"json", "hashed"}, {"text", "plain"}} {
		t.Run(tc.format, func(t *testing.T) {
			r := newLoggedRun(t, "format = \""+tc.format+"\"\nusers = \""+tc.users+"\"")
			r.everyFlow(t)
			log := r.log.String()

			// Secrets: the values themselves, and their URL-escaped
			// forms.
			r.s.mu.Lock()
			if len(r.s.seen) < 20 {
				t.Errorf("only %d secrets recorded: the recorders miss flows", len(r.s.seen))
			}
			kinds := map[string]int{}
			for v, what := range r.s.seen {
				kinds[what]++
				for _, form := range []string{v, url.QueryEscape(v)} {
					if strings.Contains(log, form) {
						t.Errorf("the log holds a %s: %q", what, v)
					}
				}
			}
			r.s.mu.Unlock()
			for _, what := range []string{"access_token", "refresh_token", "session_key", "code", "redirect code", "cookie wxgate_session", "logout token", "signing key PEM", "admin secret"} {
				if kinds[what] == 0 {
					t.Errorf("no %s recorded: the scan would not see one logged", what)
				}
			}

			lines := parseLines(t, tc.format, log)
			var access, auth []parsedLine
			for _, l := range lines {
				switch l["msg"] {
				case "request":
					access = append(access, l)
				case "auth":
					auth = append(auth, l)
				}
				if l["level"] == "ERROR" {
					t.Errorf("an ERROR line: %v", l)
				}
				if strings.Contains(l["msg"], "request failed") && (l["status"] < "500" || l["cause"] == "" || l["cause"] == "<nil>") {
					t.Errorf("a request failed line for a client's error: %v", l)
				}
			}
			sawUser := false
			for _, l := range access {
				for _, k := range []string{"request_id", "client", "method", "path", "route", "status", "duration_ms", "upstream", "bytes_in", "bytes_out"} {
					if _, ok := l[k]; !ok {
						t.Errorf("access line without %s: %v", k, l)
					}
				}
				if strings.Contains(l["path"], "?") {
					t.Errorf("access line with a query: %v", l)
				}
				if u, ok := l["user"]; ok {
					sawUser = true
					alice := r.e.user("alice").UnionID
					switch {
					case tc.users == "hashed" && !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(u):
						t.Errorf("hashed user %q", u)
					case tc.users == "plain" && !strings.HasPrefix(u, "o") && u != alice && len(u) < 10:
						t.Errorf("plain user %q", u)
					}
				}
			}
			if !sawUser {
				t.Error("no access line names a user")
			}
			if l := find(access, "path", "/api/x", "status", "200"); l == nil || l["upstream"] != "app" || l["route"] != "api" || l["client"] != "127.0.0.1" {
				t.Errorf("the bearer call's access line: %v", l)
			}
			for _, want := range [][]string{
				{"event", "login", "flow", "oa", "result", "ok", "appid", oaID},
				{"event", "login", "flow", "qr", "result", "ok", "appid", webID},
				{"event", "login", "flow", "miniprogram", "result", "ok", "scope", "miniprogram"},
				{"event", "login", "flow", "app", "result", "ok"},
				{"event", "login", "flow", "miniprogram", "result", "errcode_40029", "level", "WARN"},
				{"event", "refresh", "kind", "token", "result", "ok"},
				{"event", "refresh", "kind", "token", "result", "invalid_grant"},
				{"event", "refresh", "kind", "sns", "result", "ok"},
				{"event", "revocation", "by", "reuse_detection"},
				{"event", "revocation", "by", "token_revoke"},
				{"event", "revocation", "by", "admin"},
				{"event", "logout"},
				{"event", "denial", "reason", "invalid_token", "route", "api"},
				{"event", "denial", "reason", "login_required"},
				{"event", "denial", "reason", "deny_rule", "route", "internal"},
			} {
				if find(auth, want...) == nil {
					t.Errorf("no auth line with %v", want)
				}
			}
			if l := find(auth, "event", "refresh", "kind", "token", "result", "ok"); l == nil || l["user"] == "" {
				t.Errorf("the token refresh's line names no user: %v", l)
			}
			if l := find(auth, "event", "logout"); l == nil || l["user"] == "" {
				t.Errorf("the logout's line names no user: %v", l)
			}
			if l := find(auth, "event", "revocation", "by", "token_revoke"); l == nil || l["user"] == "" {
				t.Errorf("the token revocation's line names no user: %v", l)
			}
			if l := find(auth, "event", "login", "flow", "oa", "result", "ok"); l != nil {
				alice := r.e.user("alice").UnionID
				if tc.users == "plain" && l["user"] != alice || tc.users == "hashed" && (l["user"] == "" || l["user"] == alice) {
					t.Errorf("users = %s: the login's user is %q (alice is %q)", tc.users, l["user"], alice)
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("log:\n%s", log)
			}
		})
	}
}

// find returns the first line with every key/value pair of kv.
func find(lines []parsedLine, kv ...string) parsedLine {
next:
	for _, l := range lines {
		for i := 0; i+1 < len(kv); i += 2 {
			if l[kv[i]] != kv[i+1] {
				continue next
			}
		}
		return l
	}
	return nil
}

// TestLogUsersNoneFromEnv: WXGATE_LOG_USERS and WXGATE_LOG_FORMAT override
// [log] like every key; users = "none" names nobody, in no form.
func TestLogUsersNoneFromEnv(t *testing.T) {
	t.Setenv("WXGATE_LOG_USERS", "none")
	t.Setenv("WXGATE_LOG_FORMAT", "text")
	r := newLoggedRun(t, "format = \"json\"\nusers = \"plain\"")
	b := r.browser(weChatUA)
	b.login("/", "alice")
	b.upstreamView("/x", nil)
	log := r.log.String()
	lines := parseLines(t, "text", log)
	if find(lines, "msg", "auth", "event", "login", "flow", "oa", "result", "ok") == nil || find(lines, "msg", "request", "path", "/x", "status", "200") == nil {
		t.Fatalf("no login or access line in\n%s", log)
	}
	alice := r.e.user("alice")
	for _, l := range lines {
		if _, ok := l["user"]; ok {
			t.Errorf("users = none, and a line has a user: %v", l)
		}
	}
	for _, v := range []string{alice.UnionID, alice.OpenID} {
		if strings.Contains(log, v) {
			t.Errorf("users = none, and the log holds %q", v)
		}
	}
}

// TestLogUserPseudonymStable: with users = "hashed", one user is one
// pseudonym on every line, another user another.
func TestLogUserPseudonymStable(t *testing.T) {
	r := newLoggedRun(t, "format = \"json\"")
	for _, u := range []string{"alice", "bob"} {
		b := r.browser(weChatUA)
		b.login("/", u)
		b.upstreamView("/x", nil)
		b.upstreamView("/x", nil)
	}
	users := map[string]bool{}
	for _, l := range parseLines(t, "json", r.log.String()) {
		if u, ok := l["user"]; ok {
			users[u] = true
		}
	}
	if len(users) != 2 {
		t.Errorf("pseudonyms of two users: %v, want 2", users)
	}
}

// TestAppTokenBlockedNamesTheAddress: when WeChat refuses the app token
// for the IP whitelist (40164), the ERROR line carries the address WeChat
// saw, the one to add to the whitelist, and no secret.
func TestAppTokenBlockedNamesTheAddress(t *testing.T) {
	t.Setenv("WXGATE_TEST_ADMIN", adminSecret)
	log := &lockedBuffer{}
	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open-1", Domain: "127.0.0.1"},
		wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1", IPWhitelist: []string{"203.0.113.9"}},
	)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	e := newEnvOpts(t, envOptions{sim: sim, simURL: srv.URL, log: log, adminEnv: "WXGATE_TEST_ADMIN"})
	if status, m := e.adminDo(http.MethodGet, "/app-token?appid="+mpID); status != http.StatusBadGateway || m["errcode"] != float64(40164) {
		t.Fatalf("GET /app-token: %d %v, want 502 with errcode 40164", status, m)
	}
	var line string
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, `msg="fetching app access token failed"`) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no line for the failed fetch in:\n%s", log.String())
	}
	if !strings.Contains(line, "level=ERROR ") || !strings.Contains(line, "invalid ip 127.0.0.1 ") {
		t.Errorf("the failed fetch's line = %s, want ERROR naming the address 127.0.0.1", line)
	}
	if strings.Contains(log.String(), mpSecret) {
		t.Error("the log shows the AppSecret")
	}
}
