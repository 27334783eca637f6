package main

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"
)

// devBrowser is a cookie-keeping client with a User-Agent that follows no
// redirects by itself.
type devBrowser struct {
	t  *testing.T
	c  *http.Client
	ua string
}

func newDevBrowser(t *testing.T, ua string) *devBrowser {
	jar, _ := cookiejar.New(nil)
	return &devBrowser{t: t, ua: ua, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *devBrowser) do(method, u string, hdr map[string]string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("User-Agent", b.ua)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// next is where a redirect from u goes, resolved.
func (b *devBrowser) next(u string) string {
	b.t.Helper()
	resp := b.do("GET", u, nil)
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		b.t.Fatalf("GET %s: %d %q", u, resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.String()
}

// seen is what the demo upstream received for u, as JSON.
func (b *devBrowser) seen(u string, hdr map[string]string) map[string]string {
	b.t.Helper()
	if hdr == nil {
		hdr = map[string]string{}
	}
	hdr["Accept"] = "application/json"
	resp := b.do("GET", u, hdr)
	var v struct {
		Headers map[string]string `json:"headers"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		b.t.Fatalf("GET %s: %d, not the demo upstream's JSON", u, resp.StatusCode)
	}
	return v.Headers
}

func simJSON(t *testing.T, simURL, path, body string, out any) {
	t.Helper()
	resp, err := http.Post(simURL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// TestDevOtherHostAndWebview walks two flows of issue 11 through `wxgate
// dev` as a newcomer would: opening the gateway under the other loopback
// name (the public URL is 127.0.0.1) logs in through the public URL's
// callback and comes back with a hand-off ticket; and a mini program's
// web-view opens a page logged in as the mini program's user.
func TestDevOtherHostAndWebview(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	port := freePort(t)
	public := "http://127.0.0.1:" + port
	d := startDev(t, buildWxgate(t), t.TempDir(), gatewayEnv(port, public))
	other := "http://localhost:" + port

	b := newDevBrowser(t, "Mozilla/5.0 MicroMessenger/8.0.49")
	toAuth := b.next(b.next(other + "/orders?id=7"))
	if !strings.HasPrefix(toAuth, public+"/_wxgate/start?") {
		t.Fatalf("a login on localhost goes to %q, want the public URL's /start", toAuth)
	}
	authz := b.next(toAuth)
	handoff := b.next(b.next(strings.TrimSuffix(authz, "#wechat_redirect") + "&sim_user=alice&sim_decision=allow"))
	if !strings.HasPrefix(handoff, other+"/_wxgate/handoff?") || !strings.Contains(handoff, "ticket=") {
		t.Fatalf("the callback sends the browser to %q, want localhost's handoff", handoff)
	}
	if final := b.next(handoff); final != other+"/orders?id=7" {
		t.Fatalf("handoff: %q, want %s/orders?id=7", final, other)
	}
	var alice struct{ OpenID, UnionID string }
	resp, err := http.Get(d.simURL + "/_sim/user?appid=wxd0c5a1e0000000a1&user=alice")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&alice)
	resp.Body.Close()
	if got := b.seen(other+"/orders?id=7", nil)["X-Wechat-Openid"]; got != alice.OpenID || got == "" {
		t.Errorf("on localhost the demo upstream sees openid %q, want alice's %q", got, alice.OpenID)
	}

	// The mini program logs in, asks for a web-view ticket, and its
	// web-view opens the handoff: the page is the mini program's user's.
	var code struct{ Code string }
	simJSON(t, d.simURL, "/_sim/code", `{"appid":"wxd0c5a1e0000000c3","user":"alice"}`, &code)
	var pair struct {
		AccessToken string `json:"access_token"`
		OpenID      string `json:"openid"`
	}
	resp, err = http.Post(public+"/_wxgate/miniprogram/login", "application/json", strings.NewReader(`{"code":"`+code.Code+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&pair)
	resp.Body.Close()
	req, _ := http.NewRequest("POST", public+"/_wxgate/miniprogram/webview-ticket", nil)
	req.Header.Set("Authorization", "Bearer "+pair.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ticket struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&ticket)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || ticket.Ticket == "" || ticket.ExpiresIn != 30 {
		t.Fatalf("webview-ticket: %d %+v", resp.StatusCode, ticket)
	}
	wv := newDevBrowser(t, "Mozilla/5.0 (iPhone) MicroMessenger/8.0.49 miniProgram")
	if final := wv.next(public + "/_wxgate/handoff?ticket=" + ticket.Ticket + "&rd=%2Forders"); final != public+"/orders" {
		t.Fatalf("web-view handoff: %q, want %s/orders", final, public)
	}
	h := wv.seen(public+"/orders", nil)
	if h["X-Wechat-Openid"] != pair.OpenID || pair.OpenID == "" || h["X-Wechat-Scope"] != "miniprogram" || h["X-Forwarded-User"] != alice.UnionID {
		t.Errorf("in the web-view the demo upstream sees %v, want the mini program's alice (openid %q, unionid %q)", h, pair.OpenID, alice.UnionID)
	}
	// Used once: another web-view with the same ticket is not logged in.
	if resp := newDevBrowser(t, wv.ua).do("GET", public+"/_wxgate/handoff?ticket="+ticket.Ticket+"&rd=%2Forders", nil); resp.StatusCode < 400 {
		t.Errorf("the ticket a second time: %d, want a refusal", resp.StatusCode)
	}
}
