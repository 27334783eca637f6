package proxy_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// adminDo sends an admin API request with the admin secret and decodes the
// JSON answer.
func (e *env) adminDo(method, path string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.adminURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestRevokeAllAfterPruningAndCapping: a person's index is bounded (issue
// 9) without letting any live login escape the admin's "revoke all": logins
// beyond max_logins_per_user are really ended, ended ones leave the index
// at the next login, and DELETE /sessions still ends every live browser
// session and token family.
func TestRevokeAllAfterPruningAndCapping(t *testing.T) {
	t.Setenv("WXGATE_TEST_ADMIN", adminSecret)
	e := newEnvOpts(t, envOptions{adminEnv: "WXGATE_TEST_ADMIN", sessionTTL: "1h", maxLoginsPerUser: 3})
	alice := e.user("alice")
	login := func() *browser {
		b := e.browser(weChatUA)
		b.login("/", "alice")
		return b
	}
	loggedIn := func(b *browser) bool {
		resp, _ := b.get("/", nil)
		return resp.StatusCode == http.StatusOK
	}
	var early []*browser
	for range 5 {
		early = append(early, login())
	}
	for i, b := range early {
		if got, want := loggedIn(b), i >= 2; got != want {
			t.Errorf("browser login %d of 5 with max_logins_per_user = 3: logged in = %v, want %v", i+1, got, want)
		}
	}
	if got, want := grepLines(e.scrape(), "wxgate_logins_capped_total{"), `wxgate_logins_capped_total{kind="session"} 2`; got != want {
		t.Errorf("metrics: %q, want %q", got, want)
	}

	// An hour on, those have ended; their entries leave the index at the
	// next logins.
	e.advance(time.Hour + time.Minute)
	late := []*browser{login(), login()}
	pair := e.api().mpLogin("alice")
	status, m := e.adminDo(http.MethodGet, "/sessions?unionid="+alice.UnionID)
	if logins, _ := m["logins"].([]any); status != http.StatusOK || len(logins) != 3 {
		t.Fatalf("GET /sessions: %d %v; want the 2 late browser logins and the mini-program's", status, m)
	}
	if status, m := e.adminDo(http.MethodDelete, "/sessions?unionid="+alice.UnionID); status != http.StatusOK {
		t.Fatalf("DELETE /sessions: %d %v", status, m)
	}
	for i, b := range append(early, late...) {
		if loggedIn(b) {
			t.Errorf("browser login %d still logged in after DELETE /sessions", i+1)
		}
	}
	if status, m, _ := e.api().get("/api/x", pair["access_token"].(string)); status != http.StatusUnauthorized {
		t.Errorf("the mini-program's access token after DELETE /sessions: %d %v, want 401", status, m)
	}
}

// TestAdminSessionsByForwardedUser: the value the upstream saw as
// X-Forwarded-User finds the person's logins through every app; an openid
// finds only its app's.
func TestAdminSessionsByForwardedUser(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "dora")
	pair := e.api().mpLogin("dora")
	fromBrowser := first(b.upstreamView("/orders", nil).Headers["X-Forwarded-User"])
	fromMP := first(e.api().view("/api/x", pair["access_token"].(string)).Headers["X-Forwarded-User"])
	if fromBrowser == "" || fromBrowser != fromMP {
		t.Fatalf("X-Forwarded-User: %q in the browser, %q from the mini program; want one person", fromBrowser, fromMP)
	}
	apps := func(query string) []string {
		t.Helper()
		status, m := e.adminDo(http.MethodGet, "/sessions?"+query)
		if status != http.StatusOK {
			t.Fatalf("GET /sessions?%s: %d %v", query, status, m)
		}
		var out []string
		for _, l := range m["logins"].([]any) {
			out = append(out, l.(map[string]any)["appid"].(string))
		}
		slices.Sort(out)
		return out
	}
	if got, want := apps("user="+url.QueryEscape(fromBrowser)), []string{oaID, mpID}; !slices.Equal(got, want) {
		t.Errorf("logins of user=%s: apps %v, want %v", fromBrowser, got, want)
	}
	if got, want := apps("openid="+e.user("dora").OpenID), []string{oaID}; !slices.Equal(got, want) {
		t.Errorf("logins of the official account's openid: apps %v, want %v", got, want)
	}
	if status, _ := e.adminDo(http.MethodGet, "/sessions?user="); status != http.StatusBadRequest {
		t.Errorf("GET /sessions?user=: %d, want 400", status)
	}
}

// TestAdminIndex: GET / on the admin listener lists its endpoints, with no
// secret, and each listed path answers there.
func TestAdminIndex(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.adminURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx struct {
		Endpoints []struct{ Method, Path string } `json:"endpoints"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&idx) != nil || len(idx.Endpoints) == 0 {
		t.Fatalf("GET / on the admin listener: %d, want the JSON list of endpoints", resp.StatusCode)
	}
	for _, ep := range idx.Endpoints {
		path := strings.NewReplacer("appid=", "appid="+oaID, "user=|unionid=|openid=", "user=nobody").Replace(ep.Path)
		status, _ := e.adminDo(ep.Method, path)
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			t.Errorf("%s %s is listed but answers %d", ep.Method, path, status)
		}
	}
}
