package proxy_test

import (
	"bytes"
	"encoding/base64"
	"html"
	"image"
	_ "image/png"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	gozxingqr "github.com/makiuchi-d/gozxing/qrcode"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

const (
	desktopUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	androidUA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
	iPhoneUA  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
	pcWeChat  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x63090a13)"
)

var (
	iframeRE   = regexp.MustCompile(`<iframe src="([^"]+)"`)
	fallbackRE = regexp.MustCompile(`href="([^"]*/connect/qrconnect[^"]*)"`)
	qrImgRE    = regexp.MustCompile(`<img class="qr" src="data:image/png;base64,([^"]+)"`)
)

// qrPage is what the QR login page shows: the framed URL and the
// fallback link to WeChat's page, unescaped.
type qrPage struct {
	frame, fallback, state string
	resp                   *http.Response
	body                   string
}

// qrPage fetches the QR page at rawURL and checks its shape.
func (b *browser) qrPage(rawURL string) qrPage {
	b.e.t.Helper()
	resp, body := b.get(rawURL, nil)
	if resp.StatusCode != http.StatusOK {
		b.e.t.Fatalf("GET %s: %d, want the QR page; body %.300s", rawURL, resp.StatusCode, body)
	}
	fm, lm := iframeRE.FindStringSubmatch(body), fallbackRE.FindStringSubmatch(body)
	if fm == nil || lm == nil {
		b.e.t.Fatalf("GET %s: no frame or no fallback link in %.600s", rawURL, body)
	}
	p := qrPage{frame: html.UnescapeString(fm[1]), fallback: html.UnescapeString(lm[1]), resp: resp, body: body}
	u, err := url.Parse(p.frame)
	if err != nil {
		b.e.t.Fatal(err)
	}
	p.state = u.Query().Get("state")
	return p
}

// qrLogin runs the QR login from a protected path as a desktop browser,
// the user allowing on the simulator's page, and returns where the
// callback sends the browser.
func (b *browser) qrLogin(path, user string) string {
	b.e.t.Helper()
	start := b.expectRedirect(path)
	qr := b.expectRedirect(start)
	p := b.qrPage(qr)
	cb := b.authorize(p.fallback, user, "allow")
	return b.expectRedirect(cb)
}

// decodeQR reads a PNG's QR code as a phone's scanner would.
func decodeQR(t *testing.T, png []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(png))
	if err != nil {
		t.Fatalf("not an image: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := gozxingqr.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("decoding the QR code: %v", err)
	}
	return res.GetText()
}

func webUser(e *env, name string) wechatsim.User {
	e.t.Helper()
	u, ok := e.sim.User(webID, name)
	if !ok {
		e.t.Fatalf("no sim user %s", name)
	}
	return u
}

// TestQRLogin: a desktop browser on a gateway with a website app logs in
// by QR: /start sends it to the QR page, which frames WeChat's qrconnect
// page as wxLogin.js does (CSP allowing that origin and nothing inline
// but its own), links to the whole page, and the callback redeems the
// code with the website app and lands on the page, with the profile.
func TestQRLogin(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true})
	b := e.browser(desktopUA)

	start := b.expectRedirect("/orders?id=7")
	qr := b.expectRedirect(start)
	if qr != e.url+"/_wxgate/qr?rd=%2Forders%3Fid%3D7" {
		t.Fatalf("desktop /start: Location %q, want the QR page", qr)
	}
	p := b.qrPage(qr)
	cbURL := url.QueryEscape(e.url + "/_wxgate/callback")
	base := e.simURL + "/connect/qrconnect?appid=" + webID + "&redirect_uri=" + cbURL + "&response_type=code&scope=snsapi_login&state=" + p.state + "&lang=cn"
	if len(p.state) != 32 || p.frame != base+"&login_type=jssdk&self_redirect=false" {
		t.Errorf("frame src = %q, want %q", p.frame, base+"&login_type=jssdk&self_redirect=false")
	}
	if p.fallback != base+"#wechat_redirect" {
		t.Errorf("fallback link = %q, want %q", p.fallback, base+"#wechat_redirect")
	}
	csp := p.resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-src "+e.simURL) || !strings.Contains(csp, "default-src 'none'") ||
		strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("QR page CSP = %q", csp)
	}
	if !strings.Contains(p.body, "微信扫码登录") || p.resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("QR page: %.300s", p.body)
	}
	if strings.Contains(p.body, "flow=oa") {
		t.Error("the dev-only link shows outside dev mode")
	}
	// The simulator's page in the frame shows a person a QR code and the
	// test users, and answers in the top window.
	resp, simPage := b.get(p.frame, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(simPage, `<img src="data:image/png`) || !strings.Contains(simPage, `target="_top"`) {
		t.Errorf("simulator's framed page: %d %.300s", resp.StatusCode, simPage)
	}

	cb := b.authorize(p.fallback, "alice", "allow")
	if final := b.expectRedirect(cb); final != e.url+"/orders?id=7" {
		t.Fatalf("after the callback: Location %q, want the page the login started from", final)
	}
	alice := webUser(e, "alice")
	got := b.upstreamView("/orders?id=7", nil)
	for name, want := range map[string]string{
		"X-Wechat-Openid":  alice.OpenID,
		"X-Wechat-Unionid": alice.UnionID,
		"X-Wechat-Appid":   webID,
		"X-Wechat-Scope":   "snsapi_login",
		"X-Forwarded-User": alice.UnionID,
	} {
		if v := got.Headers[name]; len(v) != 1 || v[0] != want {
			t.Errorf("upstream %s = %q, want %q", name, v, want)
		}
	}
	if nick, _ := url.PathUnescape(first(got.Headers["X-Wechat-Nickname"])); nick != alice.Nickname {
		t.Errorf("upstream nickname = %q, want %q", nick, alice.Nickname)
	}
	// snsapi_login carries the profile: a userinfo route asks no more.
	if resp, _ := b.get("/profile/me", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("userinfo route after a QR login: %d, want 200", resp.StatusCode)
	}
	// A second callback lands on the first one's outcome without a second
	// exchange.
	before := e.sim.Calls()["/sns/oauth2/access_token"]
	if again := b.expectRedirect(cb); again != e.url+"/orders?id=7" {
		t.Errorf("second callback: %q", again)
	}
	if n := e.sim.Calls()["/sns/oauth2/access_token"] - before; n != 0 {
		t.Errorf("the second callback redeemed the code again (%d calls)", n)
	}
	if !strings.Contains(e.scrape(), `wxgate_logins_total{flow="qr",result="ok"} 1`) {
		t.Errorf("metrics: %s", grepLines(e.scrape(), "wxgate_logins_total"))
	}
}

// TestSameUnionIDAcrossQRAndOA: one person, logged in by QR on a desktop
// and by the official account in WeChat, reaches the upstream as the same
// user (unionid), with each app's own openid, scope and appid.
func TestSameUnionIDAcrossQRAndOA(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true})
	desk, phone := e.browser(desktopUA), e.browser(weChatUA)
	if got := desk.qrLogin("/whoami", "dora"); got != e.url+"/whoami" {
		t.Fatalf("QR login landed on %q", got)
	}
	if got := phone.login("/whoami", "dora"); got != e.url+"/whoami" {
		t.Fatalf("official-account login landed on %q", got)
	}
	qr, oa := desk.upstreamView("/whoami", nil).Headers, phone.upstreamView("/whoami", nil).Headers
	h := func(m map[string][]string, k string) string { return first(m[k]) }
	if u := h(qr, "X-Wechat-Unionid"); u == "" || u != h(oa, "X-Wechat-Unionid") {
		t.Errorf("unionid: QR %q, official account %q; want the same", u, h(oa, "X-Wechat-Unionid"))
	}
	if u := h(qr, "X-Forwarded-User"); u != h(qr, "X-Wechat-Unionid") || u != h(oa, "X-Forwarded-User") {
		t.Errorf("X-Forwarded-User: QR %q, official account %q; want both the unionid", u, h(oa, "X-Forwarded-User"))
	}
	if h(qr, "X-Wechat-Openid") == h(oa, "X-Wechat-Openid") || h(qr, "X-Wechat-Openid") == "" {
		t.Errorf("openid: QR %q, official account %q; want each app's own", h(qr, "X-Wechat-Openid"), h(oa, "X-Wechat-Openid"))
	}
	if h(qr, "X-Wechat-Scope") != "snsapi_login" || h(oa, "X-Wechat-Scope") != "snsapi_base" {
		t.Errorf("scope: QR %q, official account %q", h(qr, "X-Wechat-Scope"), h(oa, "X-Wechat-Scope"))
	}
	if h(qr, "X-Wechat-Appid") != webID || h(oa, "X-Wechat-Appid") != oaID {
		t.Errorf("appid: QR %q, official account %q", h(qr, "X-Wechat-Appid"), h(oa, "X-Wechat-Appid"))
	}
}

// TestFlowByUserAgent: each browser gets the flow that can work for it.
func TestFlowByUserAgent(t *testing.T) {
	for _, website := range []bool{false, true} {
		e := newEnvOpts(t, envOptions{website: website})
		for _, tc := range []struct {
			name, ua string
			want     string // "qr", "oa", "desktop" (open in WeChat with a QR), "phone", "wecom", "miniprogram"
		}{
			{"desktop Chrome", desktopUA, "qr"},
			{"desktop Safari", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", "qr"},
			{"Android Chrome", androidUA, "phone"},
			{"iPhone Safari", iPhoneUA, "phone"},
			{"iPad", "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Version/17.4 Safari/604.1", "phone"},
			{"WeChat on Android (both markers)", weChatUA, "oa"},
			{"WeChat on iPhone (both markers)", iPhoneUA + " MicroMessenger/8.0.49(0x18003129) NetType/WIFI Language/zh_CN", "oa"},
			{"PC WeChat", pcWeChat, "oa"},
			{"WeCom", weChatUA + " wxwork/4.1.0", "wecom"},
			{"mini-program web-view", weChatUA + " miniProgram", "miniprogram"},
			{"empty", "", "qr"},
		} {
			want := tc.want
			if want == "qr" && !website {
				want = "desktop"
			}
			b := e.browser(tc.ua)
			start := e.url + "/_wxgate/start?rd=%2Fshop%3Fa%3D1"
			resp, body := b.get(start, nil)
			loc := resp.Header.Get("Location")
			switch want {
			case "qr":
				if resp.StatusCode != http.StatusFound || loc != "/_wxgate/qr?rd=%2Fshop%3Fa%3D1" {
					t.Errorf("website %v, %s: %d to %q, want the QR page", website, tc.name, resp.StatusCode, loc)
				}
			case "oa":
				if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, e.simURL+"/connect/oauth2/authorize?") {
					t.Errorf("website %v, %s: %d to %q, want WeChat's authorize page", website, tc.name, resp.StatusCode, loc)
				}
			default:
				link := `id="link">` + html.EscapeString(e.url+"/shop?a=1") + "</code>"
				hasQR := qrImgRE.MatchString(body)
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, link) || !strings.Contains(body, `id="copy"`) ||
					hasQR != (want == "desktop") || strings.Contains(body, "<iframe") {
					t.Errorf("website %v, %s: %d, QR shown %v; want the %s page with the link and a copy button: %.500s", website, tc.name, resp.StatusCode, hasQR, want, body)
				}
				if want == "wecom" && !strings.Contains(body, "企业微信") {
					t.Errorf("website %v, %s: not the WeCom page", website, tc.name)
				}
				// The official-account login is not available in a web-view:
				// the mini program must hand its user in.
				if want == "miniprogram" && !strings.Contains(body, "小程序") {
					t.Errorf("website %v, %s: not the mini-program page", website, tc.name)
				}
			}
			// The QR page itself sends any other browser, or any browser
			// without a website app, to the flow /start picks.
			resp, _ = b.get(e.url+"/_wxgate/qr?rd=%2Fshop%3Fa%3D1", nil)
			if want != "qr" && (resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/_wxgate/start?rd=%2Fshop%3Fa%3D1")) {
				t.Errorf("website %v, %s on /qr: %d to %q, want /start", website, tc.name, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	}
}

// TestOpenInWeChatQR: without a website app a desktop browser gets a QR
// code that a phone's scanner reads as the page's own absolute URL, drawn
// here (no script or image from elsewhere), and a copy button.
func TestOpenInWeChatQR(t *testing.T) {
	e := newEnv(t)
	b := e.browser(desktopUA)
	for _, tc := range []struct{ rd, want string }{
		{"/orders?id=7&x=%E5%BE%AE", e.url + "/orders?id=7&x=%E5%BE%AE"},
		{"https://good.example.com/shop", "https://good.example.com/shop"},
		{"https://evil.example/steal", e.url + "/"},
		{"//evil.example/steal", e.url + "/"},
	} {
		resp, body := b.get("/_wxgate/start?rd="+url.QueryEscape(tc.rd), nil)
		m := qrImgRE.FindStringSubmatch(body)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("rd=%s: %d, no QR image: %.400s", tc.rd, resp.StatusCode, body)
		}
		png, err := base64.StdEncoding.DecodeString(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeQR(t, png); got != tc.want {
			t.Errorf("rd=%s: the QR code reads %q, want %q", tc.rd, got, tc.want)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "img-src data:") || !strings.Contains(csp, "script-src 'sha256-") || strings.Contains(csp, "unsafe") || strings.Contains(csp, "frame-src") {
			t.Errorf("open-in-WeChat CSP = %q", csp)
		}
		if strings.Contains(body, "<script src") || strings.Contains(body, "http://"+"cdn") {
			t.Errorf("the page loads a script from elsewhere: %.400s", body)
		}
	}
	// English, by Accept-Language.
	b.lang = "en-US,en;q=0.9"
	if _, body := b.get("/_wxgate/start?rd=/", nil); !strings.Contains(body, "Copy link") || !strings.Contains(body, "Scan the QR code") {
		t.Errorf("English page: %.400s", body)
	}
}

// TestQRAttacks: what an attacker sends to the QR flow.
func TestQRAttacks(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true})

	t.Run("forged state", func(t *testing.T) {
		b := e.browser(desktopUA)
		b.qrPage("/_wxgate/qr?rd=/")
		for _, s := range []string{"ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", "short", "../../x", strings.Repeat("a", 500), "%00"} {
			resp, _ := b.get("/_wxgate/callback?code=x&state="+url.QueryEscape(s), nil)
			if resp.StatusCode != http.StatusBadRequest || b.cookie("wxgate_session") != "" {
				t.Errorf("state %q: %d, want 400 and no session", s, resp.StatusCode)
			}
		}
	})

	t.Run("code of the official account on a QR state", func(t *testing.T) {
		b := e.browser(desktopUA)
		p := b.qrPage("/_wxgate/qr?rd=%2Fx")
		// A real code, for the official account, from the same user.
		oaCode := mustQuery(t, e.browser(weChatUA).authorize(
			e.simURL+"/connect/oauth2/authorize?appid="+oaID+"&redirect_uri="+url.QueryEscape(e.url+"/_wxgate/callback")+"&response_type=code&scope=snsapi_userinfo&state=s#wechat_redirect",
			"alice", "allow"), "code")
		loc := b.expectRedirect("/_wxgate/callback?code=" + oaCode + "&state=" + p.state)
		if loc != e.url+"/_wxgate/qr?rd=%2Fx&retry=1" {
			t.Fatalf("OA code on a QR state: Location %q, want a new QR page (WeChat said 40029)", loc)
		}
		if b.cookie("wxgate_session") != "" {
			t.Fatal("an official account's code logged in on a QR state")
		}
		// Once more on the restarted login: the error page.
		p2 := b.qrPage(loc)
		resp, body := b.get("/_wxgate/callback?code="+oaCode+"&state="+p2.state, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "登录失败") || b.cookie("wxgate_session") != "" {
			t.Errorf("second bad code: %d %.200s, want the 400 page and no session", resp.StatusCode, body)
		}
	})

	t.Run("code of the website app on an official-account state", func(t *testing.T) {
		b := e.browser(weChatUA)
		auth := b.expectRedirect("/_wxgate/start?rd=%2Fy")
		state := mustQuery(t, strings.TrimSuffix(auth, "#wechat_redirect"), "state")
		webCode := mustQuery(t, e.browser(desktopUA).authorize(
			e.simURL+"/connect/qrconnect?appid="+webID+"&redirect_uri="+url.QueryEscape(e.url+"/_wxgate/callback")+"&response_type=code&scope=snsapi_login&state=s&lang=cn#wechat_redirect",
			"alice", "allow"), "code")
		loc := b.expectRedirect("/_wxgate/callback?code=" + webCode + "&state=" + state)
		if !strings.HasPrefix(loc, e.simURL+"/connect/oauth2/authorize?appid="+oaID) || b.cookie("wxgate_session") != "" {
			t.Errorf("website code on an OA state: Location %q, session %q; want a restarted OA login and none", loc, b.cookie("wxgate_session"))
		}
	})

	t.Run("replayed code", func(t *testing.T) {
		b := e.browser(desktopUA)
		p := b.qrPage("/_wxgate/qr?rd=%2Fz")
		cb := b.authorize(p.fallback, "bob", "allow")
		if got := b.expectRedirect(cb); got != e.url+"/z" {
			t.Fatalf("login: %q", got)
		}
		// The callback URL in another browser: state bound elsewhere.
		other := e.browser(desktopUA)
		other.qrPage("/_wxgate/qr?rd=/")
		if resp, _ := other.get(cb, nil); resp.StatusCode != http.StatusForbidden || other.cookie("wxgate_session") != "" {
			t.Errorf("callback replayed in another browser: %d, session %q", resp.StatusCode, other.cookie("wxgate_session"))
		}
		// The same browser without its session: the code is not redeemed
		// again; a new QR page instead.
		b.setCookie("wxgate_session", "")
		before := e.sim.Calls()["/sns/oauth2/access_token"]
		if loc := b.expectRedirect(cb); loc != e.url+"/_wxgate/qr?rd=%2Fz&retry=1" {
			t.Errorf("replay without the session: Location %q", loc)
		}
		if n := e.sim.Calls()["/sns/oauth2/access_token"] - before; n != 0 {
			t.Errorf("a replay redeemed the code (%d calls)", n)
		}
	})

	t.Run("refusal", func(t *testing.T) {
		b := e.browser(desktopUA)
		p := b.qrPage("/_wxgate/qr?rd=/")
		// WeChat's QR page does not redirect on a refusal.
		u := p.fallback[:strings.Index(p.fallback, "#")] + "&sim_user=bob&sim_decision=deny"
		resp, _ := b.get(u, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
			t.Errorf("refusal on the simulator: %d to %q, want a page", resp.StatusCode, resp.Header.Get("Location"))
		}
		// A callback without a code is a refusal all the same.
		resp, body := b.get("/_wxgate/callback?state="+p.state, nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "你已取消授权") {
			t.Errorf("callback without a code: %d %.200s", resp.StatusCode, body)
		}
	})

	t.Run("simulator hangs on the code exchange", func(t *testing.T) {
		b := e.browser(desktopUA)
		p := b.qrPage("/_wxgate/qr?rd=/")
		cb := b.authorize(p.fallback, "bob", "allow")
		e.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/access_token", DelayMS: 5000})
		began := time.Now()
		resp, body := b.get(cb, nil)
		if took := time.Since(began); took > 3*time.Second {
			t.Errorf("the callback waited %v on a hung WeChat; [wechat] timeout is 500ms", took)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "微信暂时不可用") || b.cookie("wxgate_session") != "" {
			t.Errorf("hung exchange: %d %.200s, want 503 and no session", resp.StatusCode, body)
		}
	})

	t.Run("invalid binding cookie", func(t *testing.T) {
		b := e.browser(desktopUA)
		b.setCookie("wxgate_login", "not-a-valid-id")
		p := b.qrPage("/_wxgate/qr?rd=/")
		if c := b.cookie("wxgate_login"); c == "not-a-valid-id" || c == "" {
			t.Fatalf("binding cookie after the QR page: %q, want a new one", c)
		}
		if got := b.expectRedirect(b.authorize(p.fallback, "bob", "allow")); got != e.url+"/" {
			t.Errorf("login after a bad binding cookie: %q", got)
		}
	})

	t.Run("huge or foreign rd", func(t *testing.T) {
		b := e.browser(desktopUA)
		huge := "/" + strings.Repeat("a", 3000)
		for _, path := range []string{"/_wxgate/qr?rd=", "/_wxgate/start?rd="} {
			resp, body := b.get(path+huge, nil)
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "<iframe") {
				t.Errorf("%s with a 3 KB rd: %d, want 400", path, resp.StatusCode)
			}
		}
		p := b.qrPage("/_wxgate/qr?rd=" + url.QueryEscape("https://evil.example/steal"))
		if got := b.expectRedirect(b.authorize(p.fallback, "bob", "allow")); got != e.url+"/" {
			t.Errorf("QR login with rd to a foreign host lands on %q, want /", got)
		}
	})
}

// TestQRPageBounded: reloading the QR page creates a pending login each
// time, within the per-client bound; past it, 429 and no QR code.
func TestQRPageBounded(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true, maxPendingPerClient: 3})
	b := e.browser(desktopUA)
	for i := 0; i < 3; i++ {
		b.qrPage("/_wxgate/qr?rd=/")
	}
	resp, body := b.get("/_wxgate/qr?rd=/", nil)
	if resp.StatusCode != http.StatusTooManyRequests || strings.Contains(body, "<iframe") {
		t.Errorf("4th QR page from one client: %d, want 429 without a frame", resp.StatusCode)
	}
	// Another client still gets one.
	e.browserFrom(desktopUA, "127.0.0.2").qrPage("/_wxgate/qr?rd=/")
}

// TestLoginAnswerWithoutOpenID: a code exchange answered with a token but
// no openid (a proxy's or a broken WeChat's answer) logs nobody in. It
// made a session for the empty user before: every such login shared it,
// and the upstream got a logged-in request with no identity.
func TestLoginAnswerWithoutOpenID(t *testing.T) {
	e := newEnv(t)
	noOpenID := func(path string) {
		e.sim.InjectFault(wechatsim.Fault{Path: path, Body: `{"access_token":"AT","expires_in":7200,"refresh_token":"RT","scope":"snsapi_base","session_key":"c2Vzc2lvbmtleXNlc3Npb24="}`})
	}

	b := e.browser(weChatUA)
	cb := b.authorize(b.expectRedirect(b.expectRedirect("/x")), "bob", "allow")
	noOpenID("/sns/oauth2/access_token")
	resp, body := b.get(cb, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "微信暂时不可用") || b.cookie("wxgate_session") != "" {
		t.Errorf("official account: %d %.200s, session %q; want 503 and no session", resp.StatusCode, body, b.cookie("wxgate_session"))
	}

	a := e.api()
	code := e.simPost("/_sim/code", map[string]string{"appid": mpID, "user": "bob"})["code"]
	noOpenID("/sns/jscode2session")
	if status, m, _ := a.post("/_wxgate/miniprogram/login", map[string]any{"code": code}, ""); status != http.StatusServiceUnavailable || m["access_token"] != nil {
		t.Errorf("mini program: %d %v, want 503 and no token", status, m)
	}
	code = e.simPost("/_sim/code", map[string]string{"appid": appID, "user": "bob"})["code"]
	noOpenID("/sns/oauth2/access_token")
	if status, m, _ := a.post("/_wxgate/app/login", map[string]any{"code": code}, ""); status != http.StatusServiceUnavailable || m["access_token"] != nil {
		t.Errorf("mobile app: %d %v, want 503 and no token", status, m)
	}
}

// TestQRUserInfoOfAnotherOpenID: /sns/userinfo answering without the
// token's openid, or with another's, gives no session: the QR login took
// the answer's unionid when the token had none (another person's, as
// X-Forwarded-User) and passed userinfo routes without a profile.
func TestQRUserInfoOfAnotherOpenID(t *testing.T) {
	for _, info := range []string{`{}`, `{"openid":"o-someone-else","nickname":"Mallory","unionid":"u-someone-else"}`} {
		e := newEnvOpts(t, envOptions{website: true})
		b := e.browser(desktopUA)
		p := b.qrPage("/_wxgate/qr?rd=%2Fx")
		cb := b.authorize(p.fallback, "bob", "allow")
		// Without a unionid in the token, the profile's is taken.
		e.sim.InjectFault(wechatsim.Fault{Path: "/sns/oauth2/access_token", Body: `{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"o-bob","scope":"snsapi_login"}`})
		e.sim.InjectFault(wechatsim.Fault{Path: "/sns/userinfo", Body: info, Times: 3}) // and its retries
		resp, body := b.get(cb, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "微信暂时不可用") || b.cookie("wxgate_session") != "" {
			_, who := b.get("/_wxgate/userinfo", nil)
			t.Errorf("userinfo %s: %d, logged in as %s; want 503 and no session", info, resp.StatusCode, who)
		}
	}
}

// TestReturnURLBoundAfterValidation: the rd bound holds for the return
// URL as kept, which safeRedirect writes escaped: 1.8 KB of UTF-8 in an
// allowed host's path became 5.4 KB. The official account's login kept
// it with its pending login, three times over the bound, and a desktop
// browser went from /start to a QR page that refused it with a 400.
func TestReturnURLBoundAfterValidation(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true})
	rd := url.QueryEscape("https://good.example.com/" + strings.Repeat("微", 600))
	for _, ua := range []string{desktopUA, weChatUA} {
		resp, body := e.browser(ua).get("/_wxgate/start?rd="+rd, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "请求无效") {
			t.Errorf("%.30s: /start with a return URL over the bound once escaped: %d to %q, want 400", ua, resp.StatusCode, resp.Header.Get("Location")[:min(80, len(resp.Header.Get("Location")))])
		}
	}
	// Within the bound once escaped, it is kept as it is.
	rd = url.QueryEscape("https://good.example.com/" + strings.Repeat("微", 200))
	if loc := e.browser(desktopUA).expectRedirect("/_wxgate/start?rd=" + rd); !strings.HasPrefix(loc, e.url+"/_wxgate/qr?rd=") {
		t.Errorf("desktop /start with a 1.8 KB escaped return URL: Location %q, want the QR page", loc)
	}
}

// TestLoginStartFromSubresource: a page elsewhere loading the QR page or
// /start as an image, a frame or a fetch (the frame is shown nowhere:
// frame-ancestors) stores no pending login. Each one did, against the
// visitor's address: a few hundred <img> tags on any page left its
// visitors' network with 429 instead of a QR code for ten minutes.
func TestLoginStartFromSubresource(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true, maxPendingPerClient: 3})
	desk, phone := e.browser(desktopUA), e.browser(weChatUA)
	for _, dest := range []string{"image", "iframe", "empty", "script", "object"} {
		hdr := map[string]string{"Sec-Fetch-Dest": dest, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site"}
		for _, tc := range []struct {
			b    *browser
			path string
		}{{desk, "/_wxgate/qr?rd=/"}, {phone, "/_wxgate/start?rd=/"}} {
			resp, body := tc.b.get(tc.path, hdr)
			if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "<iframe") || resp.Header.Get("Location") != "" {
				t.Errorf("%s as %s: %d to %q, want 403", tc.path, dest, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	}
	// The person's own navigation still gets its QR code and its
	// official-account login.
	nav := map[string]string{"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site"}
	if resp, body := desk.get("/_wxgate/qr?rd=/", nav); resp.StatusCode != http.StatusOK || !strings.Contains(body, "<iframe") {
		t.Errorf("a navigation to the QR page after them: %d, want the QR page", resp.StatusCode)
	}
	if resp, _ := phone.get("/_wxgate/start?rd=/", nav); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), e.simURL) {
		t.Errorf("a navigation to /start in WeChat after them: %d, want WeChat's authorize page", resp.StatusCode)
	}
}

// TestHeadStartsNoLogin: a HEAD of the QR page or of an in-WeChat /start
// (a link checker, a chat app's preview) stores no pending login, so it
// spends nothing of the client's bounds.
func TestHeadStartsNoLogin(t *testing.T) {
	e := newEnvOpts(t, envOptions{website: true, maxPendingPerClient: 2})
	for _, tc := range []struct{ ua, path string }{
		{desktopUA, "/_wxgate/qr?rd=/"},
		{weChatUA, "/_wxgate/start?rd=/"},
	} {
		b := e.browser(tc.ua)
		for range 5 {
			resp := b.do(http.MethodHead, tc.path, nil, nil)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HEAD %s: %d, want 200", tc.path, resp.StatusCode)
			}
		}
		if resp, _ := b.get(tc.path, nil); resp.StatusCode == http.StatusTooManyRequests {
			t.Errorf("GET %s after 5 HEADs: 429, the HEADs were counted as logins", tc.path)
		}
	}
}
