package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// wsScript opens a WebSocket to url, sends "ping", and leaves in
// window.wsResult what happened: the messages received, or how it failed.
const wsScript = `(function () {
  var got = [];
  var s = new WebSocket(%q);
  s.onopen = function () { s.send("ping"); };
  s.onmessage = function (m) { got.push(m.data); if (got.length === 2) { window.wsResult = JSON.stringify({ok: got}); s.close(); } };
  s.onerror = function () { window.wsResult = JSON.stringify({error: "failed"}); };
  s.onclose = function (e) { if (window.wsResult === undefined) window.wsResult = JSON.stringify({error: "closed " + e.code}); };
  return true;
})()`

// TestBrowserWebSocket opens a WebSocket in a real browser after the
// in-WeChat login: the page's own origin gets a socket carrying the user's
// identity; a page of another origin of the same site (127.0.0.1 on
// another port: the browser sends the SameSite=Lax cookie) gets none.
func TestBrowserWebSocket(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	ctx := chromium(t, weChatUA, "zh-CN")
	bob := e.user("bob")
	loginInBrowser(t, ctx, e.url+"/profile/page", "bob")

	wsURL := "ws" + strings.TrimPrefix(e.url, "http") + "/profile/ws/headers"
	result := func() map[string]any {
		t.Helper()
		waitFor(t, ctx, `window.wsResult !== undefined`)
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.wsResult`))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(raw), &m)
		return m
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(wsScript, wsURL))); err != nil {
		t.Fatal(err)
	}
	m := result()
	msgs, _ := m["ok"].([]any)
	if len(msgs) != 2 || msgs[1] != "ping" {
		t.Fatalf("the page's own WebSocket: %v, want the upstream's view and the echo", m)
	}
	var view echo
	_ = json.Unmarshal([]byte(msgs[0].(string)), &view)
	if v := view.Headers["X-Wechat-Openid"]; len(v) != 1 || v[0] != bob.OpenID {
		t.Errorf("the upstream's X-WeChat-OpenID %v, want [%s]", v, bob.OpenID)
	}
	if c := strings.Join(view.Headers["Cookie"], ";"); strings.Contains(c, "wxgate") {
		t.Errorf("the upstream received wxgate's cookie: %q", c)
	}

	// Another origin of the same site.
	before := up.handshakes.Load()
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>other</title><p>other site</p>`)
	}))
	defer evil.Close()
	if err := chromedp.Do(ctx, chromedp.Navigate(evil.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(wsScript, wsURL))); err != nil {
		t.Fatal(err)
	}
	if m := result(); m["ok"] != nil {
		t.Errorf("a page of %s opened a WebSocket with the user's session: %v", evil.URL, m)
	}
	if n := up.handshakes.Load() - before; n != 0 {
		t.Errorf("%d handshakes from the other origin reached the upstream", n)
	}
}
