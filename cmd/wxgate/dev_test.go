package main

import (
	"bufio"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestDev runs `wxgate dev` as built, with the shipped gateway.toml, and
// walks the login the README describes: a WeChat browser is sent to the
// simulator's authorize URL, comes back logged in, and the demo upstream
// sees the simulator's openid for alice, never the client's own.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "wxgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := freePort(t)
	public := "http://127.0.0.1:" + port
	state := t.TempDir()
	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(bin, "dev", "--config", "../../gateway.toml", "--sim-listen", "127.0.0.1:0", "--demo-listen", "127.0.0.1:0")
		cmd.Env = append(os.Environ(),
			"WXGATE_SERVER_LISTEN=127.0.0.1:"+port,
			"WXGATE_SERVER_PUBLIC_URL="+public,
			"WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:0",
			"WXGATE_SERVER_LOG_LEVEL=warn",
			"WXGATE_TOKENS_SIGNING_KEY_FILE="+filepath.Join(state, "signing.pem"),
			"WXGATE_SESSION_SNAPSHOT_FILE="+filepath.Join(state, "sessions.snapshot"),
		)
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, readUntil(t, stdout, "Press Ctrl-C")
	}
	cmd, banner := start()
	if !strings.Contains(banner, public+"/") {
		t.Fatalf("dev did not print the URL to open:\n%s", banner)
	}
	simURL := regexp.MustCompile(`simulator\s+(http://\S+)`).FindStringSubmatch(banner)[1]

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0.49")
		for k, v := range hdr {
			req.Header[k] = []string{v}
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	next := func(u string) string {
		t.Helper()
		resp := get(u, nil)
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil {
			t.Fatalf("GET %s: %d %q", u, resp.StatusCode, resp.Header.Get("Location"))
		}
		return loc.String()
	}

	auth := next(next(public + "/"))
	oa := "wxd0c5a1e0000000a1" // the shipped gateway.toml's official account
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(simURL+"/connect/oauth2/authorize?appid="+oa+"&redirect_uri="+url.QueryEscape(public+"/_wxgate/callback")+"&response_type=code&scope=snsapi_base&state=") + `[a-zA-Z0-9]{32}&connect_redirect=1#wechat_redirect$`)
	if !re.MatchString(auth) {
		t.Fatalf("authorize URL %q, want %s", auth, re)
	}
	cb := next(strings.TrimSuffix(auth, "#wechat_redirect") + "&sim_user=alice&sim_decision=allow")
	if final := next(cb); final != public+"/" {
		t.Fatalf("after callback: %q, want %s/", final, public)
	}

	var alice struct{ OpenID, Nickname string }
	resp, err := http.Get(simURL + "/_sim/user?appid=" + oa + "&user=alice")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&alice)
	resp.Body.Close()

	var seen struct {
		Headers map[string]string `json:"headers"`
	}
	resp = get(public+"/", map[string]string{"Accept": "application/json", "X-WeChat-OpenID": "forged", "x_wechat_openid": "forged"})
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatal(err)
	}
	if got := seen.Headers["X-Wechat-Openid"]; got != alice.OpenID || alice.OpenID == "" {
		t.Errorf("demo upstream X-WeChat-OpenID = %q, want alice's %q", got, alice.OpenID)
	}
	for k, v := range seen.Headers {
		if strings.Contains(v, "forged") {
			t.Errorf("demo upstream received %s: %s", k, v)
		}
	}

	// The demo's WebSocket echo, with the cookie session; 401 without.
	wsURL := "ws://127.0.0.1:" + port + "/ws/echo"
	var cookies []string
	for _, ck := range jar.Cookies(&url.URL{Scheme: "http", Host: "127.0.0.1:" + port}) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	ws, resp, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Cookie": {strings.Join(cookies, "; ")}, "Origin": {public}})
	if err != nil {
		t.Fatalf("WebSocket to the demo with the session: %v %v", resp, err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello, "+seen.Headers["X-Forwarded-User"] || seen.Headers["X-Forwarded-User"] == "" {
		t.Errorf("demo WebSocket greeting %q, %v; want hello, %s", msg, err, seen.Headers["X-Forwarded-User"])
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("echo me")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "echo me" {
		t.Errorf("demo WebSocket echo %q, %v", msg, err)
	}
	ws.Close()
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("WebSocket to the demo without a session: %v %v, want 401", resp, err)
	}

	// The userinfo route takes the base session through the consent.
	auth = next(next(public + "/profile/"))
	if final := next(next(strings.TrimSuffix(auth, "#wechat_redirect") + "&sim_user=alice&sim_decision=allow")); final != public+"/profile/" {
		t.Fatalf("after consent: %q", final)
	}
	resp = get(public+"/profile/", map[string]string{"Accept": "application/json"})
	_ = json.NewDecoder(resp.Body).Decode(&seen)
	if nick, _ := url.PathUnescape(seen.Headers["X-Wechat-Nickname"]); nick != alice.Nickname {
		t.Errorf("demo upstream nickname = %q, want %q", nick, alice.Nickname)
	}

	// A mini program logs in with a wx.login code and calls the API.
	mp := "wxd0c5a1e0000000c3" // the shipped gateway.toml's mini program
	resp, err = http.Post(simURL+"/_sim/code", "application/json", strings.NewReader(`{"appid":"`+mp+`","user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	var code struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&code)
	resp.Body.Close()
	resp, err = http.Post(public+"/_wxgate/miniprogram/login", "application/json", strings.NewReader(`{"code":"`+code.Code+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var pair struct{ AccessToken, OpenID string }
	var raw map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	pair.AccessToken, _ = raw["access_token"].(string)
	pair.OpenID, _ = raw["openid"].(string)
	req, _ := http.NewRequest("GET", public+"/api/me", nil)
	req.Header.Set("Authorization", "Bearer "+pair.AccessToken)
	req.Header.Set("Accept", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if pair.OpenID == "" || seen.Headers["X-Wechat-Openid"] != pair.OpenID || seen.Headers["X-Wechat-Identity"] == "" {
		t.Errorf("mini-program API call: openid %q, upstream saw %v", pair.OpenID, seen.Headers)
	}

	// A desktop browser gets the open-in-WeChat page with the dev link.
	req, _ = http.NewRequest("GET", public+"/_wxgate/start?rd=/", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "flow=oa") {
		t.Errorf("desktop start page lacks the dev link: %.300s", page)
	}

	// With the shipped website app, a desktop browser logs in by QR: the
	// QR page frames the simulator's qrconnect page, and a test user's
	// consent there lands on the page the login started from.
	deskJar, _ := cookiejar.New(nil)
	desk := &http.Client{Jar: deskJar, Timeout: 10 * time.Second}
	resp, err = desk.Get(public + "/_wxgate/start?rd=%2Fprofile%2F")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	frame := regexp.MustCompile(`<iframe src="([^"]+)"`).FindStringSubmatch(string(page))
	if resp.Request.URL.Path != "/_wxgate/qr" || frame == nil {
		t.Fatalf("desktop /start ended on %s without a frame: %.300s", resp.Request.URL, page)
	}
	frameURL := html.UnescapeString(frame[1])
	if !strings.HasPrefix(frameURL, simURL+"/connect/qrconnect?appid=wxd0c5a1e0000000b2&") || !strings.HasSuffix(frameURL, "&login_type=jssdk&self_redirect=false") {
		t.Errorf("frame src %q", frameURL)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-src "+simURL) {
		t.Errorf("QR page CSP %q does not allow framing the simulator", csp)
	}
	resp, err = desk.Get(strings.TrimSuffix(frameURL, "&login_type=jssdk&self_redirect=false") + "&sim_user=bob&sim_decision=allow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.String() != public+"/profile/" || resp.StatusCode != http.StatusOK {
		t.Errorf("QR login ended on %s with %d, want %s/profile/", resp.Request.URL, resp.StatusCode, public)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("wxgate dev after SIGTERM: %v", err)
	}

	// Started again, the memory store comes back from its snapshot: the
	// same cookie is still logged in.
	cmd, _ = start()
	resp = get(public+"/", map[string]string{"Accept": "application/json"})
	seen.Headers = nil
	_ = json.NewDecoder(resp.Body).Decode(&seen)
	if resp.StatusCode != 200 || seen.Headers["X-Wechat-Openid"] != alice.OpenID {
		t.Errorf("after a restart the cookie gives %d, openid %q; want alice still logged in", resp.StatusCode, seen.Headers["X-Wechat-Openid"])
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// readUntil reads r until a line contains marker and returns what it read.
func readUntil(t *testing.T, r io.Reader, marker string) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), marker) {
				done <- b.String()
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
		done <- b.String()
	}()
	select {
	case s := <-done:
		if !strings.Contains(s, marker) {
			t.Fatalf("process output ended without %q:\n%s", marker, s)
		}
		return s
	case <-time.After(30 * time.Second):
		t.Fatalf("no %q within 30s", marker)
	}
	return ""
}

func TestDevStatePath(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"snapshot default", ".wxgate/sessions.snapshot", ".wxgate/dev/sessions.snapshot"},
		{"signing key default", ".wxgate/signing-key.pem", ".wxgate/dev/signing-key.pem"},
		{"absolute, from the environment", "/tmp/x/signing.pem", "/tmp/x/dev/signing.pem"},
		{"bare name", "sessions.snapshot", "dev/sessions.snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, want := devStatePath(filepath.FromSlash(tc.in)), filepath.FromSlash(tc.want); got != want {
				t.Errorf("devStatePath(%q) = %q, want %q", tc.in, got, want)
			}
		})
	}
}
