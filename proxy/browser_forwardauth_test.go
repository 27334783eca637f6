package proxy_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserForwardAuthNginx logs in through nginx's auth_request in a
// real browser: the app behind nginx sends it to wxgate's login, the
// simulator's consent page is answered by clicks, and the browser lands on
// the page it asked for with the identity the app received.
func TestBrowserForwardAuthNginx(t *testing.T) {
	e, front := frontProxies[0].run(t)
	ctx := chromium(t, weChatUA, "zh-CN")
	carol := e.user("carol")
	err := chromedp.Do(ctx,
		chromedp.Navigate(front+"/orders?id=7"),
		chromedp.WaitVisible(chromedp.CSS(`button[value="allow"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "nginx-forward-auth-consent.png")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[name="sim_user"][value="carol"]`)),
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
	if location != front+"/orders?id=7" {
		t.Errorf("browser ended on %q, want %q (behind nginx)", location, front+"/orders?id=7")
	}
	body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "nginx-forward-auth-logged-in.png")
	for _, want := range []string{carol.OpenID, carol.UnionID, "X-Wechat-Identity"} {
		if !strings.Contains(body, want) {
			t.Errorf("the app behind nginx did not show %q: %.500s", want, body)
		}
	}
	// A deny route is nginx's 403 from wxgate's answer, in the browser too.
	if err := chromedp.Do(ctx, chromedp.Navigate(front+"/denied/x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.body !== null && document.body.innerText.includes("403")`)
}
