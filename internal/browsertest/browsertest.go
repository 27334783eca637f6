// Package browsertest starts headless Chromium for tests, driven through
// chromedp, with the flags CI needs.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium returns a headless Chromium context, or skips the test when
// Chromium is not installed (never in CI, which sets
// WXGATE_REQUIRE_BROWSER). The context ends with the test, and at most 60
// seconds after the browser started.
func Chromium(t testing.TB, userAgent, acceptLang string) context.Context {
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

// Overflow lists what on the page in ctx reaches past the right edge of
// the viewport: the document itself, then each element, with the start
// of its text. A page that reads on a phone lists nothing.
func Overflow(ctx context.Context) ([]string, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
		const w = document.documentElement.clientWidth, out = [];
		if (document.documentElement.scrollWidth > w) out.push("document: " + document.documentElement.scrollWidth + "px > " + w + "px");
		for (const el of document.body.querySelectorAll("*")) {
			const r = el.getBoundingClientRect();
			if (r.right > w + 0.5) out.push(el.tagName + " " + JSON.stringify((el.textContent || "").slice(0, 40)) + ": right edge at " + Math.round(r.right) + "px");
		}
		return out;
	})()`))
}
