package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// TestLogoutDuringRefreshSticks: a browser logs out while one of its
// requests is refreshing the session's WeChat token. The refresh writes the
// whole session back when WeChat answers (Manager.Update), after the
// logout deleted it, so the session comes back to life: anyone holding
// the cookie (a thief, another tab) is still logged in after the logout.
func TestLogoutDuringRefreshSticks(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	sid := b.cookie("wxgate_session")
	if sid == "" {
		t.Fatal("no session cookie after login")
	}
	// The sns token is within the refresh margin but still valid; WeChat
	// answers the refresh slowly (well inside the 500ms client timeout).
	e.both(2*time.Hour - 2*time.Minute)
	e.sim.InjectFault(wechatsim.Fault{Path: refreshPath, DelayMS: 300})

	before := e.refreshes()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		thief := e.browser(weChatUA)
		thief.setCookie("wxgate_session", sid)
		thief.get("/page", map[string]string{"Accept": "application/json"})
	}()
	// Log out once WeChat has the refresh request and is still answering.
	deadline := time.Now().Add(5 * time.Second)
	for e.refreshes() == before {
		if time.Now().After(deadline) {
			t.Fatal("the request did not start a refresh")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp := b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader("rd=/"),
		map[string]string{"Origin": e.url, "Content-Type": "application/x-www-form-urlencoded"})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d, want 303", resp.StatusCode)
	}
	wg.Wait()

	after := e.browser(weChatUA)
	after.setCookie("wxgate_session", sid)
	resp, body := after.get("/page", map[string]string{"Accept": "application/json"})
	if resp.StatusCode == http.StatusOK {
		t.Errorf("the session ID still works after logout (the in-flight refresh wrote it back): %d %.200s", resp.StatusCode, body)
	}
}

// TestRevokeDuringRefreshSticks: a refresh token's family is revoked
// (POST /token/revoke, as "log out" or a thief-detected client would) while
// the same token is being rotated. Issuer.Refresh reads the family, then
// writes it back whole with the new current token, so a revoke that lands
// in between is overwritten: the revoke answers 200, yet the pair the
// refresh returned keeps working. Every serial order ends revoked (revoking
// with a rotated-out token still finds the family), so a live family at the
// end is the race.
func TestRevokeDuringRefreshSticks(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	lost := 0
	const rounds = 500
	for i := 0; i < rounds && lost == 0; i++ {
		pair := a.mpLogin("racer")
		rt := pair["refresh_token"].(string)
		var wg sync.WaitGroup
		start := make(chan struct{})
		var refreshed map[string]any
		var refreshStatus, revokeStatus int
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			refreshStatus, refreshed, _ = a.post("/_wxgate/token/refresh", map[string]string{"refresh_token": rt}, "")
		}()
		go func() {
			defer wg.Done()
			<-start
			revokeStatus, _, _ = a.post("/_wxgate/token/revoke", map[string]string{"refresh_token": rt}, "")
		}()
		close(start)
		wg.Wait()
		if revokeStatus != http.StatusOK || refreshStatus != http.StatusOK {
			continue
		}
		if status, _, _ := a.get("/_wxgate/userinfo", refreshed["access_token"].(string)); status == http.StatusOK {
			lost = i + 1
		}
	}
	if lost > 0 {
		t.Errorf("a revoke answered 200 was undone by a concurrent refresh: the family stayed live (round %d of at most %d)", lost, rounds)
	}
}

// TestPhoneRacingRevokeIsInvalidToken: a mini-program login revoked while
// WeChat answers its phone request (revocation deletes the family) gets 401
// invalid_token, so the client logs in again; not a 503 "unavailable" that
// would make it retry and log a store outage that is not one.
func TestPhoneRacingRevokeIsInvalidToken(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("fay")
	code := e.simPost("/_sim/phonecode", map[string]string{"appid": mpID, "user": "fay", "phone": "13800138000"})["code"]
	const phonePath = "/wxa/business/getuserphonenumber"
	e.sim.InjectFault(wechatsim.Fault{Path: phonePath, DelayMS: 300})
	before := e.sim.Calls()[phonePath]
	type answer struct {
		status int
		body   string
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/_wxgate/miniprogram/phone", strings.NewReader(`{"code":"`+code.(string)+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+pair["access_token"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{resp.StatusCode, string(b)}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for e.sim.Calls()[phonePath] == before {
		if time.Now().After(deadline) {
			t.Fatal("the phone request never reached WeChat")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if status, m, _ := a.post("/_wxgate/token/revoke", map[string]string{"refresh_token": pair["refresh_token"].(string)}, ""); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, m)
	}
	got := <-done
	if got.status != http.StatusUnauthorized {
		t.Errorf("phone request whose login was revoked meanwhile: %d, want 401 invalid_token; body %.300q", got.status, got.body)
	}
}
