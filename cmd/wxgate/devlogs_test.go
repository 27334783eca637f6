package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestDevSessionLogs runs a `wxgate dev` session (a browser's official
// account login, a mini program's login, bearer call, refresh, web-view
// ticket and revocation, a bad code, a logout) with the log in JSON and in
// text at debug, and scans all of it for every secret and token the
// session handed out: none may appear. The access and auth lines must.
func TestDevSessionLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildWxgate(t)
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			port := freePort(t)
			public := "http://127.0.0.1:" + port
			secrets := map[string]string{
				"oa secret":  "dev-logs-oa-secret-0123",
				"mp secret":  "dev-logs-mp-secret-0123",
				"app secret": "dev-logs-app-secret-0123",
				"web secret": "dev-logs-web-secret-0123",
			}
			env := gatewayEnv(port, public, "WXGATE_LOG_FORMAT="+format, "WXGATE_SERVER_LOG_LEVEL=debug",
				"WXGATE_OA_SECRET="+secrets["oa secret"], "WXGATE_MINIPROGRAM_SECRET="+secrets["mp secret"],
				"WXGATE_APP_SECRET="+secrets["app secret"], "WXGATE_WEBSITE_SECRET="+secrets["web secret"])
			d := startDev(t, bin, t.TempDir(), env)

			// The official account, as a WeChat browser.
			b := newDevBrowser(t, "Mozilla/5.0 MicroMessenger/8.0.49")
			authz := b.next(b.next(public + "/orders?id=7"))
			cb := b.next(strings.TrimSuffix(authz, "#wechat_redirect") + "&sim_user=alice&sim_decision=allow")
			if u, err := url.Parse(cb); err == nil {
				secrets["oa code"] = u.Query().Get("code")
			}
			if final := b.next(cb); final != public+"/orders?id=7" {
				t.Fatalf("login: %q", final)
			}
			u, _ := url.Parse(public)
			for _, c := range b.c.Jar.Cookies(u) {
				secrets["cookie "+c.Name] = c.Value
			}
			b.seen(public+"/orders?id=7", nil)

			// The mini program.
			post := func(path, bearer, body string) (int, map[string]any) {
				req, _ := http.NewRequest("POST", public+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if bearer != "" {
					req.Header.Set("Authorization", "Bearer "+bearer)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var m map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&m)
				return resp.StatusCode, m
			}
			var code struct{ Code string }
			simJSON(t, d.simURL, "/_sim/code", `{"appid":"wxd0c5a1e0000000c3","user":"bob"}`, &code)
			secrets["mp code"] = code.Code
			status, pair := post("/_wxgate/miniprogram/login", "", `{"code":"`+code.Code+`"}`)
			if status != http.StatusOK {
				t.Fatalf("mini program login: %d %v", status, pair)
			}
			access, _ := pair["access_token"].(string)
			refresh, _ := pair["refresh_token"].(string)
			secrets["access token"], secrets["refresh token"] = access, refresh
			req, _ := http.NewRequest("GET", public+"/api/orders", nil)
			req.Header.Set("Authorization", "Bearer "+access)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			_, ticket := post("/_wxgate/miniprogram/webview-ticket", access, "")
			secrets["ticket"], _ = ticket["ticket"].(string)
			status, next := post("/_wxgate/token/refresh", "", `{"refresh_token":"`+refresh+`"}`)
			if status != http.StatusOK {
				t.Fatalf("refresh: %d %v", status, next)
			}
			secrets["access token 2"], _ = next["access_token"].(string)
			secrets["refresh token 2"], _ = next["refresh_token"].(string)
			if status, m := post("/_wxgate/token/revoke", "", `{"refresh_token":"`+secrets["refresh token 2"]+`"}`); status != http.StatusOK {
				t.Fatalf("revoke: %d %v", status, m)
			}
			// The code again: the user's error, 400.
			if status, m := post("/_wxgate/miniprogram/login", "", `{"code":"`+code.Code+`"}`); status != http.StatusBadRequest {
				t.Errorf("a used code: %d %v, want 400", status, m)
			}

			// Logout through the confirm form.
			resp := b.do("GET", public+"/_wxgate/logout?rd=%2F", nil)
			body, _ := io.ReadAll(resp.Body)
			tok := regexp.MustCompile(`name="token" value="([^"]+)"`).FindSubmatch(body)
			if tok == nil {
				t.Fatalf("no logout form: %.300s", body)
			}
			secrets["logout token"] = string(tok[1])
			req, _ = http.NewRequest("POST", public+"/_wxgate/logout", strings.NewReader("rd=%2F&token="+url.QueryEscape(string(tok[1]))))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("User-Agent", b.ua)
			if resp, err := b.c.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("logout: %v %v", resp, err)
			}

			// Stopped, the process has written everything, and Wait has
			// copied all of it from the pipe.
			d.stop(t)
			log := d.stderr.String()
			for what, v := range secrets {
				if len(v) < 6 {
					t.Errorf("no %s recorded", what)
					continue
				}
				if strings.Contains(log, v) || strings.Contains(log, url.QueryEscape(v)) {
					t.Errorf("the dev log holds the %s", what)
				}
			}
			wants := []string{`"msg":"request"`, `"event":"login"`, `"flow":"oa"`, `"flow":"miniprogram"`, `"kind":"token"`, `"by":"token_revoke"`, `"event":"logout"`, `"result":"errcode_40163"`, `"path":"/_wxgate/logout"`}
			if format == "text" {
				for i, w := range wants {
					k, v, _ := strings.Cut(strings.ReplaceAll(w, `"`, ""), ":")
					wants[i] = k + "=" + v
				}
			}
			for _, w := range wants {
				if !strings.Contains(log, w) {
					t.Errorf("no %s in the dev log", w)
				}
			}
			if strings.Contains(log, "level=ERROR") || strings.Contains(log, `"level":"ERROR"`) {
				t.Errorf("an ERROR in the dev log")
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("wxgate dev's log (%s):\n%s", format, log)
			}
		})
	}
}
