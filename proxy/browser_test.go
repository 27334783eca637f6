package proxy_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns a headless Chromium context, or skips the test when
// Chromium is not installed (never in CI, which sets WXGATE_REQUIRE_BROWSER).
func chromium(t *testing.T, userAgent, acceptLang string) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("WXGATE_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium is not installed and WXGATE_REQUIRE_BROWSER is set")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserAgent(userAgent),
		chromedp.Flag("accept-lang", acceptLang),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// Start the browser on a context without a deadline (a deadline on the
	// first call would bound the browser's life), then bound the test.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	return ctx
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

	err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/profile/settings?tab=1"),
		// The simulator's consent page.
		chromedp.WaitVisible(chromedp.CSS(`button[value="allow"]`)),
		chromedp.Click(chromedp.CSS(`input[name="sim_user"][value="bob"]`)),
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.body !== null && document.body.innerText.includes("X-Wechat-Openid")`)
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
