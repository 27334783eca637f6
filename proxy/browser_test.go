package proxy_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wxgate/wxgate/internal/browsertest"
)

// chromium returns a headless Chromium context, or skips the test when
// Chromium is not installed (never in CI, which sets WXGATE_REQUIRE_BROWSER).
func chromium(t *testing.T, userAgent, acceptLang string) context.Context {
	t.Helper()
	return browsertest.Chromium(t, userAgent, acceptLang)
}

// loginInBrowser opens url in ctx's browser, answers the simulator's
// consent page as user, and waits for the upstream's page with the
// identity headers it received.
func loginInBrowser(t *testing.T, ctx context.Context, url, user string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`button[value="allow"]`)),
		chromedp.Click(chromedp.CSS(`input[name="sim_user"][value="`+user+`"]`)),
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.body !== null && document.body.innerText.includes("X-Wechat-Openid")`)
}

// waitFor evaluates a JavaScript predicate until it holds. Evaluations that
// fail because the page is navigating are retried; the context's deadline
// bounds the wait.
func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			loc, _ := chromedp.Run(context.Background(), chromedp.Location())
			t.Fatalf("waiting for %s: %v (last error %v, at %s)", expr, ctx.Err(), lastErr, loc)
		case <-tick.C:
		}
	}
}

// TestBrowserLogin runs the in-WeChat login in a real browser: a userinfo
// route, the simulator's consent page answered by clicks, and the page the
// login started from, with the identity the upstream received.
func TestBrowserLogin(t *testing.T) {
	e := newEnv(t)
	ctx := chromium(t, weChatUA, "zh-CN")
	bob := e.user("bob")
	loginInBrowser(t, ctx, e.url+"/profile/settings?tab=1", "bob")
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if location != e.url+"/profile/settings?tab=1" {
		t.Errorf("browser ended on %q, want the page it started from", location)
	}
	if !strings.Contains(body, bob.OpenID) || !strings.Contains(body, url.PathEscape(bob.Nickname)) {
		t.Errorf("upstream answer lacks bob's openid or nickname: %.500s", body)
	}
	// The session cookie is HttpOnly: page scripts cannot read it.
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cookies, "wxgate_session") {
		t.Errorf("document.cookie = %q exposes the session", cookies)
	}
}

// TestBrowserRefusal refuses the consent in a real browser and checks the
// page the user sees, in the browser's language.
func TestBrowserRefusal(t *testing.T) {
	for _, tc := range []struct{ lang, title string }{
		{"zh-CN", "你已取消授权"},
		{"en-US", "You declined"},
	} {
		t.Run(tc.lang, func(t *testing.T) { browserRefusal(t, tc.lang, tc.title) })
	}
}

func browserRefusal(t *testing.T, lang, want string) {
	e := newEnv(t)
	ctx := chromium(t, weChatUA, lang)
	err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/profile/"),
		chromedp.WaitVisible(chromedp.CSS(`button[value="deny"]`)),
		chromedp.Click(chromedp.CSS(`button[value="deny"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.title === `+strconv.Quote(want))
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if title != want {
		t.Errorf("refusal page title = %q, want %q", title, want)
	}
}

// artifact saves a screenshot for people to look at: under
// $WXGATE_ARTIFACTS if set, else in the test's temporary directory.
func artifact(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := os.Getenv("WXGATE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// screenshot captures the viewport as PNG.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, name, png)
}

// TestBrowserQRLogin runs the desktop QR login in a real browser: /start
// leads to the QR page, whose frame shows the simulator's QR page; a test
// user allowed there navigates the top window back logged in. Then the
// fallback link, the simulator's QR page on its own.
func TestBrowserQRLogin(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true})
	ctx := chromium(t, desktopUA, "zh-CN")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 760), chromedp.Navigate(e.url+"/profile/settings?tab=1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `location.pathname === "/_wxgate/qr"`)
	// The simulator's page (another origin, but the same site: Chrome runs
	// it in this process, so its document is reachable) has drawn its QR
	// code in the frame.
	inFrame := chromedp.FromNode(frameNode(t, ctx))
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`img[src^="data:image/png"]`), inFrame)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "qr-login-page.png")
	err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[name="sim_user"][value="bob"]`), inFrame),
		chromedp.Click(chromedp.CSS(`button[value="allow"]`), inFrame),
	)
	if err != nil {
		t.Fatal(err)
	}
	bob := webUser(e, "bob")
	waitFor(t, ctx, `document.body !== null && document.body.innerText.includes("X-Wechat-Openid")`)
	location, _ := chromedp.Run(ctx, chromedp.Location())
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if location != e.url+"/profile/settings?tab=1" {
		t.Errorf("the top window ended on %q, want the page the login started from", location)
	}
	if !strings.Contains(body, bob.OpenID) || !strings.Contains(body, "snsapi_login") || !strings.Contains(body, url.PathEscape(bob.Nickname)) {
		t.Errorf("upstream answer lacks bob's website openid, snsapi_login or nickname: %.600s", body)
	}
	screenshot(t, ctx, "qr-logged-in.png")

	// The fallback link: the simulator's QR page as a page of its own.
	ctx2 := chromium(t, desktopUA, "zh-CN")
	err = chromedp.Do(ctx2,
		chromedp.EmulateViewport(800, 760),
		chromedp.Navigate(e.url+"/_wxgate/qr?rd=%2Fpublic%2Fhello"),
		chromedp.Click(chromedp.CSS(`a[href*="/connect/qrconnect"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx2, `location.pathname === "/connect/qrconnect" && document.querySelector("img") !== null && document.querySelector("img").naturalWidth > 0`)
	screenshot(t, ctx2, "simulator-qr-consent.png")
	if err := chromedp.Do(ctx2, chromedp.Click(chromedp.CSS(`button[value="allow"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx2, `location.pathname === "/public/hello"`)
}

// frameNode waits for the page's iframe to have a document loaded and
// returns its node.
func frameNode(t *testing.T, ctx context.Context) *chromedp.Node {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS("iframe")))
		if err == nil && len(nodes) > 0 && nodes[0].ContentDocument != nil && nodes[0].ContentDocument.DocumentURL != "about:blank" {
			return nodes[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the iframe's document: %v (last error %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// TestBrowserOpenInWeChat: without a website app a desktop browser sees
// the open-in-WeChat page; the QR code as the browser draws it decodes to
// the page's URL, and the copy button works (its script is allowed by the
// page's Content-Security-Policy, or the button would stay hidden).
func TestBrowserOpenInWeChat(t *testing.T) {
	e := newEnv(t)
	ctx := chromium(t, desktopUA, "zh-CN")
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(900, 900),
		chromedp.Navigate(e.url+"/orders?id=7"),
		chromedp.WaitVisible(chromedp.CSS(`#copy`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector("img.qr").naturalWidth > 0`)
	// The inline style applies: its hash is in the CSP too.
	if w, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).maxWidth`)); w != "480px" {
		t.Errorf("body max-width = %q, want 480px from the page's style", w)
	}
	screenshot(t, ctx, "open-in-wechat.png")
	qr, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`img.qr`)))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "open-in-wechat-qr.png", qr)
	if got, want := decodeQR(t, qr), e.url+"/orders?id=7"; got != want {
		t.Errorf("the QR code on screen reads %q, want %q", got, want)
	}
	link, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("link").textContent`))
	if link != e.url+"/orders?id=7" {
		t.Errorf("the link shown is %q", link)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#copy`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.getElementById("copy").textContent === "已复制"`)
}

// TestBrowserPagesOnAPhone: wxgate's own pages fit a 375px phone screen,
// long links and request IDs included: the copy-link page a phone browser
// outside WeChat gets, the 502 page with its retry button and request ID,
// and the logout confirmation.
func TestBrowserPagesOnAPhone(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, ua, path string
	}{
		{"copy link", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1",
			"/orders/" + strings.Repeat("a", 150) + "?id=" + strings.Repeat("7", 100)},
		{"upstream down", weChatUA, "/down/" + strings.Repeat("b", 150)},
		{"logout", weChatUA, "/_wxgate/logout?rd=%2F" + strings.Repeat("c", 150)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := chromium(t, tc.ua, "zh-CN")
			if err := chromedp.Do(ctx,
				chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2), chromedp.EmulateMobile),
				chromedp.Navigate(e.url+tc.path),
				chromedp.WaitVisible(chromedp.CSS("h1")),
			); err != nil {
				t.Fatal(err)
			}
			overflow, err := browsertest.Overflow(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range overflow {
				t.Errorf("wider than a 375px phone: %s", o)
			}
		})
	}
}
