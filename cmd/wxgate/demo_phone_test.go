package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/wxgate/wxgate/internal/browsertest"
)

// TestDemoPageOnAPhone renders the demo upstream's page in Chromium at a
// phone's width (375 CSS pixels), with the identity headers a userinfo
// login sends (a 600-character X-Wechat-Identity, an avatar URL) and a
// long request URI: nothing may be wider than the screen, so the page
// reads without scrolling sideways.
func TestDemoPageOnAPhone(t *testing.T) {
	demo := DemoUpstream()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range map[string]string{
			"X-Forwarded-User":   "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
			"X-Wechat-Openid":    "oX9dw5uUqJd3Xk0vZ8rL2pQ7sT1y",
			"X-Wechat-Unionid":   "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
			"X-Wechat-Nickname":  "%E5%BE%AE%E4%BF%A1%E7%94%A8%E6%88%B7",
			"X-Wechat-Avatar":    "https://thirdwx.qlogo.cn/mmopen/vi_32/" + strings.Repeat("Q0j4TwGTfTK", 8) + "/132",
			"X-Wechat-Identity":  "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEyMyJ9." + strings.Repeat("eyJzdWIiOiJvNl9ibWpyUFRsbTZfMnNnVnQ3aE1aT1BmTDJNIn0", 10) + ".sig",
			"X-Wechat-Scope":     "snsapi_userinfo",
			"X-Request-Id":       "0123456789abcdef0123456789abcdef",
			"X-Forwarded-Prefix": "/",
		} {
			r.Header.Set(k, v)
		}
		demo.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ctx := browsertest.Chromium(t, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) MicroMessenger/8.0.49", "zh-CN")
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(srv.URL+"/orders/2026/11/"+strings.Repeat("a", 120)+"?id="+strings.Repeat("7", 80)),
		chromedp.WaitVisible(chromedp.CSS("table")),
	)
	if err != nil {
		t.Fatal(err)
	}
	overflow, err := browsertest.Overflow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("WXGATE_ARTIFACTS"); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, "demo-phone.png"), shot, 0o644)
	}
	for _, o := range overflow {
		t.Errorf("wider than a 375px phone: %s", o)
	}
}
