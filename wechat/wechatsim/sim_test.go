package wechatsim_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
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
	oa, oaSecret = "wxoa0000000000001", "oa-secret"
	web          = "wxweb000000000001"
	mp, mpSecret = "wxmp0000000000001", "mp-secret"
	mob          = "wxapp000000000001"
	lone         = "wxlone00000000001" // bound to no open platform
	walled       = "wxwall00000000001" // IP whitelist excludes loopback
)

type sim struct {
	t   *testing.T
	s   *wechatsim.Server
	url string
}

func newSim(t *testing.T) *sim {
	t.Helper()
	s := wechatsim.New(
		wechatsim.App{AppID: oa, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "op", Domain: "app.example.com"},
		wechatsim.App{AppID: web, Secret: "web-secret", Type: wechatsim.Website, OpenPlatformID: "op", Domain: "app.example.com"},
		wechatsim.App{AppID: mp, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "op"},
		wechatsim.App{AppID: mob, Secret: "app-secret", Type: wechatsim.MobileApp, OpenPlatformID: "op"},
		wechatsim.App{AppID: lone, Secret: "lone-secret", Type: wechatsim.OfficialAccount},
		wechatsim.App{AppID: walled, Secret: "w", Type: wechatsim.OfficialAccount, IPWhitelist: []string{"203.0.113.9"}},
	)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &sim{t: t, s: s, url: srv.URL}
}

// call sends a request and decodes the JSON answer.
func (s *sim) call(method, path string, body any) map[string]any {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		s.t.Fatalf("%s %s: not JSON: %q", method, path, b)
	}
	return out
}

func errcode(m map[string]any) int {
	if v, ok := m["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (s *sim) code(appID, user, scope string) string {
	s.t.Helper()
	m := s.call("POST", "/_sim/code", map[string]string{"appid": appID, "user": user, "scope": scope})
	c, _ := m["code"].(string)
	if len(c) != 32 {
		s.t.Fatalf("/_sim/code = %v", m)
	}
	return c
}

func TestJSONEscapesSlashes(t *testing.T) {
	s := newSim(t)
	resp, err := http.Get(s.url + "/sns/userinfo?access_token=x&openid=y")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"errcode":40001`) || !strings.Contains(string(b), "rid: ") {
		t.Errorf("error answer = %d %s; want HTTP 200 with errcode and rid", resp.StatusCode, b)
	}
}

func TestCodeExchangeErrors(t *testing.T) {
	s := newSim(t)
	good := s.code(oa, "alice", "snsapi_base")
	tests := []struct {
		name  string
		query string
		want  int
	}{
		{"appid missing", "secret=x&code=c&grant_type=authorization_code", 41002},
		{"secret missing", "appid=" + oa + "&code=c&grant_type=authorization_code", 41004},
		{"unknown appid", "appid=wxnope&secret=x&code=c&grant_type=authorization_code", 40013},
		{"wrong secret", "appid=" + oa + "&secret=bad&code=c&grant_type=authorization_code", 40125},
		{"code missing", "appid=" + oa + "&secret=" + oaSecret + "&grant_type=authorization_code", 41008},
		{"grant type", "appid=" + oa + "&secret=" + oaSecret + "&code=c&grant_type=x", 40002},
		{"unknown code", "appid=" + oa + "&secret=" + oaSecret + "&code=nope&grant_type=authorization_code", 40029},
		{"foreign code", "appid=" + mob + "&secret=app-secret&code=" + good + "&grant_type=authorization_code", 40029},
		{"js code here", "appid=" + mp + "&secret=" + mpSecret + "&code=" + good + "&grant_type=authorization_code", 40013},
		{"good", "appid=" + oa + "&secret=" + oaSecret + "&code=" + good + "&grant_type=authorization_code", 0},
		{"reused", "appid=" + oa + "&secret=" + oaSecret + "&code=" + good + "&grant_type=authorization_code", 40163},
	}
	for _, tc := range tests {
		if got := errcode(s.call("GET", "/sns/oauth2/access_token?"+tc.query, nil)); got != tc.want {
			t.Errorf("%s: errcode %d, want %d", tc.name, got, tc.want)
		}
	}
	// Codes expire after 5 minutes.
	late := s.code(oa, "alice", "snsapi_base")
	s.s.Advance(5*time.Minute + time.Second)
	if got := errcode(s.call("GET", "/sns/oauth2/access_token?appid="+oa+"&secret="+oaSecret+"&code="+late+"&grant_type=authorization_code", nil)); got != 40029 {
		t.Errorf("expired code: errcode %d, want 40029", got)
	}
}

func TestIdentitiesAreDeterministic(t *testing.T) {
	s := newSim(t)
	a1, _ := s.s.User(oa, "alice")
	a2, _ := s.s.User(mp, "alice")
	b1, _ := s.s.User(oa, "bob")
	l, _ := s.s.User(lone, "alice")
	if a1.OpenID == a2.OpenID || a1.UnionID != a2.UnionID || a1.UnionID == b1.UnionID || l.UnionID != "" {
		t.Errorf("openids must differ per app, unionids agree per platform: %+v %+v %+v %+v", a1, a2, b1, l)
	}
	if len(a1.OpenID) != 28 || a1.OpenID[0] != 'o' || len(a1.UnionID) != 29 {
		t.Errorf("shapes: openid %q unionid %q", a1.OpenID, a1.UnionID)
	}
	again := wechatsim.New(wechatsim.App{AppID: oa, Type: wechatsim.OfficialAccount, OpenPlatformID: "op"})
	if a3, _ := again.User(oa, "alice"); a3 != a1 {
		t.Errorf("a new simulator gives %+v, want %+v", a3, a1)
	}
}

func TestAuthorizePageErrors(t *testing.T) {
	s := newSim(t)
	ru := url.QueryEscape("https://app.example.com/cb")
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name, path string
		want       string // errcode on the page, or "302"
	}{
		{"ok", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_base&state=s&sim_user=a&sim_decision=allow", "302"},
		{"order", "/connect/oauth2/authorize?redirect_uri=" + ru + "&appid=" + oa + "&response_type=code&scope=snsapi_base&state=s", "10001"},
		{"appid empty", "/connect/oauth2/authorize?appid=&redirect_uri=" + ru + "&response_type=code&scope=snsapi_base", "10012"},
		{"domain", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + url.QueryEscape("https://evil.example.com/cb") + "&response_type=code&scope=snsapi_base", "10003"},
		{"subdomain", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + url.QueryEscape("https://x.app.example.com/cb") + "&response_type=code&scope=snsapi_base", "10003"},
		{"redirect empty", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=&response_type=code&scope=snsapi_base", "10011"},
		{"scope empty", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + ru + "&response_type=code&scope=", "10010"},
		{"scope bad", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_login", "10005"},
		{"website appid", "/connect/oauth2/authorize?appid=" + web + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_base", "10016"},
		{"state too long", "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_base&state=" + strings.Repeat("a", 129), "10001"},
		{"qr ok", "/connect/qrconnect?appid=" + web + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_login&state=s&sim_user=a&sim_decision=allow", "302"},
		{"qr refused", "/connect/qrconnect?appid=" + web + "&redirect_uri=" + ru + "&response_type=code&scope=snsapi_login&state=s&sim_user=a&sim_decision=deny", "200"},
	}
	for _, tc := range tests {
		resp, err := hc.Get(s.url + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch tc.want {
		case "302":
			loc := resp.Header.Get("Location")
			if resp.StatusCode != 302 || !strings.HasPrefix(loc, "https://app.example.com/cb?code=") || !strings.HasSuffix(loc, "&state=s") {
				t.Errorf("%s: %d %q", tc.name, resp.StatusCode, loc)
			}
		case "200":
			if resp.StatusCode != 200 || resp.Header.Get("Location") != "" {
				t.Errorf("%s: %d %q, want a page and no redirect", tc.name, resp.StatusCode, resp.Header.Get("Location"))
			}
		default:
			if !strings.Contains(string(b), `data-errcode="`+tc.want+`"`) {
				t.Errorf("%s: page lacks errcode %s: %.200s", tc.name, tc.want, b)
			}
		}
	}
	// The code goes before a fragment, with & after an existing query.
	resp, _ := hc.Get(s.url + "/connect/oauth2/authorize?appid=" + oa + "&redirect_uri=" + url.QueryEscape("https://app.example.com/cb?x=1#frag") + "&response_type=code&scope=snsapi_base&state=s&sim_user=a&sim_decision=allow")
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://app.example.com/cb?x=1&code=") || !strings.HasSuffix(loc, "&state=s#frag") {
		t.Errorf("redirect with query and fragment: %q", loc)
	}
}

func TestAppTokens(t *testing.T) {
	s := newSim(t)
	get := func() map[string]any {
		return s.call("GET", "/cgi-bin/token?grant_type=client_credential&appid="+oa+"&secret="+oaSecret, nil)
	}
	t1 := get()["access_token"].(string)
	if len(t1) < 110 || len(t1) > 160 {
		t.Errorf("token length %d, want 110-160", len(t1))
	}
	t2 := get()["access_token"].(string)
	if t1 == t2 {
		t.Fatal("/cgi-bin/token returned the same token twice")
	}
	check := func(tok string) int {
		return errcode(s.call("GET", "/wxa/checksession?access_token="+tok+"&openid=x&signature=x&sig_method=hmac_sha256", nil))
	}
	// The previous token stays valid 5 minutes, then dies.
	if got := check(t1); got != 87007 {
		t.Errorf("old token right after: errcode %d, want 87007 (token accepted)", got)
	}
	s.s.Advance(5*time.Minute + time.Second)
	if got := check(t1); got != 42001 {
		t.Errorf("old token after 5 min: errcode %d, want 42001", got)
	}
	if got := check(t2); got != 87007 {
		t.Errorf("current token: errcode %d, want it accepted", got)
	}
	walledOut := s.call("GET", "/cgi-bin/token?grant_type=client_credential&appid="+walled+"&secret=w", nil)
	if got := errcode(walledOut); got != 40164 {
		t.Errorf("IP not whitelisted: errcode %d, want 40164", got)
	}
	// The address to whitelist, as WeChat names it.
	if msg, _ := walledOut["errmsg"].(string); !strings.HasPrefix(msg, "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist, rid: ") {
		t.Errorf("40164 errmsg = %q, want it to name the caller's address", msg)
	}
	if got := errcode(s.call("GET", "/cgi-bin/stable_token", nil)); got != 43002 {
		t.Errorf("stable_token by GET: errcode %d, want 43002", got)
	}
}

func TestStableToken(t *testing.T) {
	s := newSim(t)
	// The test spans two hours and more of the simulator's clock, and the
	// forced refreshes are counted per calendar day: start at tomorrow's
	// noon, or a run after about 21:50 crosses midnight and the count
	// starts again (it failed every evening).
	now := time.Now()
	s.s.Advance(time.Date(now.Year(), now.Month(), now.Day()+1, 12, 0, 0, 0, now.Location()).Sub(now))
	stable := func(force bool) (string, int) {
		m := s.call("POST", "/cgi-bin/stable_token", map[string]any{"grant_type": "client_credential", "appid": oa, "secret": oaSecret, "force_refresh": force})
		tok, _ := m["access_token"].(string)
		exp, _ := m["expires_in"].(float64)
		return tok, int(exp)
	}
	a, exp := stable(false)
	if b, _ := stable(false); a != b || exp != 7200 {
		t.Fatalf("normal mode: %q then %q (expires_in %d); want the same token", a, b, exp)
	}
	s.s.Advance(7200*time.Second - 4*time.Minute)
	b, exp := stable(false)
	if b == a || exp != 7200 {
		t.Errorf("within 5 min of expiry: same token %v, expires_in %d; want a new one", b == a, exp)
	}
	c, _ := stable(true)
	if c == b {
		t.Error("force_refresh returned the current token")
	}
	if d, _ := stable(true); d != c {
		t.Error("a second force within 30 s issued a new token")
	}
	for i := 0; i < 25; i++ {
		s.s.Advance(31 * time.Second)
		stable(true)
	}
	before, _ := stable(false)
	s.s.Advance(31 * time.Second)
	if after, _ := stable(true); after != before {
		t.Error("more than 20 forced refreshes in a day")
	}
	if st := s.call("GET", "/_sim/stats", nil)["calls"].(map[string]any); st["/cgi-bin/stable_token"].(float64) < 29 {
		t.Errorf("stats = %v", st)
	}
}

func TestMiniProgram(t *testing.T) {
	s := newSim(t)
	js := s.code(mp, "alice", "")
	m := s.call("GET", "/sns/jscode2session?appid="+mp+"&secret="+mpSecret+"&js_code="+js+"&grant_type=authorization_code", nil)
	alice, _ := s.s.User(mp, "alice")
	key, _ := m["session_key"].(string)
	if m["openid"] != alice.OpenID || m["unionid"] != alice.UnionID {
		t.Fatalf("jscode2session = %v", m)
	}
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		t.Fatalf("session_key %q is not base64 of 16 bytes", key)
	}
	if got := errcode(s.call("GET", "/sns/jscode2session?appid="+mp+"&secret="+mpSecret+"&js_code="+js+"&grant_type=authorization_code", nil)); got != 40163 {
		t.Errorf("reused js_code: errcode %d, want 40163", got)
	}

	tok := s.call("GET", "/cgi-bin/token?grant_type=client_credential&appid="+mp+"&secret="+mpSecret, nil)["access_token"].(string)
	mac := hmac.New(sha256.New, []byte(key))
	sig := hex.EncodeToString(mac.Sum(nil))
	for _, tc := range []struct {
		q    string
		want int
	}{
		{"signature=" + sig + "&sig_method=hmac_sha256", 0},
		{"signature=" + strings.Repeat("0", 64) + "&sig_method=hmac_sha256", 87009},
		{"signature=" + sig + "&sig_method=md5", 87008},
	} {
		if got := errcode(s.call("GET", "/wxa/checksession?access_token="+tok+"&openid="+alice.OpenID+"&"+tc.q, nil)); got != tc.want {
			t.Errorf("checksession %s: errcode %d, want %d", tc.q, got, tc.want)
		}
	}

	// encryptedData for the current session_key decrypts with it.
	enc := s.call("POST", "/_sim/encrypt", map[string]string{"appid": mp, "user": "alice"})
	plain := decrypt(t, key, enc["iv"].(string), enc["encrypted_data"].(string))
	var info struct {
		OpenID    string                 `json:"openId"`
		Watermark struct{ AppID string } `json:"watermark"`
	}
	if err := json.Unmarshal(plain, &info); err != nil || info.OpenID != alice.OpenID || info.Watermark.AppID != mp {
		t.Errorf("decrypted %s: %v", plain, err)
	}

	// Phone numbers.
	pc := s.call("POST", "/_sim/phonecode", map[string]string{"appid": mp, "user": "alice", "phone": "13800138000"})["code"].(string)
	if len(pc) != 64 {
		t.Errorf("phone code %q is not 64 hex", pc)
	}
	m = s.call("POST", "/wxa/business/getuserphonenumber?access_token="+tok, map[string]string{"code": pc})
	info2, _ := m["phone_info"].(map[string]any)
	if errcode(m) != 0 || info2["purePhoneNumber"] != "13800138000" || info2["countryCode"] != "86" {
		t.Errorf("getuserphonenumber = %v", m)
	}
	if got := errcode(s.call("POST", "/wxa/business/getuserphonenumber?access_token="+tok, map[string]string{"code": pc})); got != 40029 {
		t.Errorf("reused phone code: errcode %d, want 40029", got)
	}
	if got := errcode(s.call("GET", "/wxa/business/getuserphonenumber?access_token="+tok, nil)); got != 43002 {
		t.Errorf("phone by GET: errcode %d, want 43002", got)
	}
}

// TestCheckSessionVector runs the official checksession HMAC vector: key is
// the session_key string's bytes, the message empty.
func TestCheckSessionVector(t *testing.T) {
	mac := hmac.New(sha256.New, []byte("tiihtNczf5v6AKRyjwEUhQ=="))
	if got := hex.EncodeToString(mac.Sum(nil)); got != "7154f9f8b4b76b92f541cbf0e37d48840fa06e5e42da92a6f80168a1516a4735" {
		t.Errorf("HMAC = %s", got)
	}
}

func decrypt(t *testing.T, key, iv, data string) []byte {
	t.Helper()
	k, _ := base64.StdEncoding.DecodeString(key)
	v, _ := base64.StdEncoding.DecodeString(iv)
	c, _ := base64.StdEncoding.DecodeString(data)
	block, err := aes.NewCipher(k)
	if err != nil || len(c)%16 != 0 {
		t.Fatalf("bad ciphertext: %v", err)
	}
	cipher.NewCBCDecrypter(block, v).CryptBlocks(c, c)
	pad := int(c[len(c)-1])
	return c[:len(c)-pad]
}

func TestFaultsAndClock(t *testing.T) {
	s := newSim(t)
	s.call("POST", "/_sim/fault", map[string]any{"path": "/sns/auth", "errcode": 45011, "times": 2})
	for i, want := range []int{45011, 45011, 40003} {
		if got := errcode(s.call("GET", "/sns/auth", nil)); got != want {
			t.Errorf("call %d: errcode %d, want %d", i, got, want)
		}
	}
	resp, _ := http.Post(s.url+"/_sim/fault", "application/json", strings.NewReader(`{"path":"/sns/auth","http_status":503,"body":"busy"}`))
	resp.Body.Close()
	resp, _ = http.Get(s.url + "/sns/auth")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(b) != "busy" {
		t.Errorf("http fault: %d %q", resp.StatusCode, b)
	}
	before := s.s.Now()
	m := s.call("POST", "/_sim/clock", map[string]any{"advance_seconds": 3600})
	if now := int64(m["now"].(float64)); now < before.Add(time.Hour).Unix() {
		t.Errorf("clock after +1h = %d, want >= %d", now, before.Add(time.Hour).Unix())
	}
	apps := []map[string]string{}
	resp, _ = http.Get(s.url + "/_sim/apps")
	_ = json.NewDecoder(resp.Body).Decode(&apps)
	resp.Body.Close()
	if len(apps) != 6 {
		t.Errorf("/_sim/apps = %v", apps)
	}
	if st := s.call("GET", "/_sim/stats", nil)["calls"].(map[string]any); st["/sns/auth"].(float64) != 4 {
		t.Errorf("stats /sns/auth = %v, want 4", st["/sns/auth"])
	}
}

func TestLifetimes(t *testing.T) {
	s := newSim(t)
	m := s.call("POST", "/_sim/lifetimes", map[string]any{"sns_access_token": 2, "app_access_token": 4.8, "refresh_token": 10})
	if m["sns_access_token"] != 2.0 || m["app_access_token"] != 4.8 || m["refresh_token"] != 10.0 {
		t.Fatalf("/_sim/lifetimes = %v", m)
	}
	tok := s.call("GET", "/sns/oauth2/access_token?appid="+oa+"&secret="+oaSecret+"&code="+s.code(oa, "alice", "snsapi_base")+"&grant_type=authorization_code", nil)
	if tok["expires_in"] != 2.0 {
		t.Errorf("sns expires_in = %v, want 2", tok["expires_in"])
	}
	at, rt, openid := tok["access_token"].(string), tok["refresh_token"].(string), tok["openid"].(string)
	auth := func(token, openid string) int {
		return errcode(s.call("GET", "/sns/auth?access_token="+token+"&openid="+openid, nil))
	}
	if got := auth(at, openid); got != 0 {
		t.Errorf("fresh token: /sns/auth errcode %d", got)
	}
	// An unknown or foreign token is 40003, as WECHAT-API.md lists.
	if got := auth("nope", openid); got != 40003 {
		t.Errorf("unknown token: /sns/auth errcode %d, want 40003", got)
	}
	if got := auth(at, "other"); got != 40003 {
		t.Errorf("another openid: /sns/auth errcode %d, want 40003", got)
	}
	s.s.Advance(2 * time.Second)
	if got := auth(at, openid); got != 42001 {
		t.Errorf("after its 2 s: /sns/auth errcode %d, want 42001", got)
	}
	refresh := func() int {
		return errcode(s.call("GET", "/sns/oauth2/refresh_token?appid="+oa+"&grant_type=refresh_token&refresh_token="+rt, nil))
	}
	if got := refresh(); got != 0 {
		t.Errorf("refresh within 10 s: errcode %d", got)
	}
	s.s.Advance(8 * time.Second)
	if got := refresh(); got != 42002 {
		t.Errorf("refresh after 10 s: errcode %d, want 42002", got)
	}
	// App tokens keep WeChat's proportions: a stable token is the same
	// until the last 1/24 of its life (0.2 s of 4.8 s), then replaced.
	stable := func() (string, float64) {
		m := s.call("POST", "/cgi-bin/stable_token", map[string]any{"grant_type": "client_credential", "appid": oa, "secret": oaSecret})
		tok, _ := m["access_token"].(string)
		exp, _ := m["expires_in"].(float64)
		return tok, exp
	}
	a, exp := stable()
	if b, _ := stable(); a != b || exp != 4 {
		t.Errorf("stable token: %v then another %v, expires_in %v; want the same, 4", a, a != b, exp)
	}
	s.s.Advance(4700 * time.Millisecond)
	if b, _ := stable(); b == a {
		t.Error("stable token in its last 0.2 s: still the same; want a new one")
	}
	if resp, _ := http.Post(s.url+"/_sim/lifetimes", "application/json", strings.NewReader(`{"sns_access_token":-1}`)); resp.StatusCode != 400 {
		t.Errorf("negative lifetime: %d, want 400", resp.StatusCode)
	}
}

// TestQRPage: the website app's page shows a person a QR code, which
// decodes to the page's own URL (what a phone would open), and the test
// users; framed as wxLogin.js frames it, allowing navigates the top
// window (self_redirect=false) and refusing stays in the frame.
func TestQRPage(t *testing.T) {
	s := newSim(t)
	page := "/connect/qrconnect?appid=" + web + "&redirect_uri=" + url.QueryEscape("https://app.example.com/cb") + "&response_type=code&scope=snsapi_login&state=s1&lang=cn"
	for _, tc := range []struct{ extra, target string }{
		{"", "_self"},
		{"&login_type=jssdk&self_redirect=false", "_top"},
		{"&login_type=jssdk&self_redirect=true", "_self"},
	} {
		resp, err := http.Get(s.url + page + tc.extra)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != 200 || !strings.Contains(body, `value="alice"`) || !strings.Contains(body, `value="allow"`) {
			t.Fatalf("qr page%s: %d %.300s", tc.extra, resp.StatusCode, body)
		}
		if !strings.Contains(body, `target="`+tc.target+`"`) || !strings.Contains(body, `value="deny" formtarget="_self"`) {
			t.Errorf("qr page%s: want the form's target %s and refusal in the frame", tc.extra, tc.target)
		}
		src := regexp.MustCompile(`<img src="data:image/png;base64,([^"]+)"`).FindStringSubmatch(body)
		if src == nil {
			t.Fatalf("qr page%s shows no QR image", tc.extra)
		}
		raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(src[1]))
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeQR(t, raw); got != s.url+page {
			t.Errorf("the QR code holds %q, want the page's URL %q", got, s.url+page)
		}
	}
}

func decodeQR(t *testing.T, b []byte) string {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
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
