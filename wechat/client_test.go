package wechat_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

const (
	oaID     = "wxoa00000000000001"
	oaSecret = "oa-secret-0123456789"
)

type env struct {
	sim    *wechatsim.Server
	srv    *httptest.Server
	client *wechat.Client
	calls  *callLog
}

type callLog struct {
	mu  sync.Mutex
	got []string
}

func (l *callLog) add(endpoint, result string, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, endpoint+"="+result)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sim := wechatsim.New(wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "open1", Domain: "app.example.com"})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	log := &callLog{}
	c := wechat.New(wechat.Config{APIBase: srv.URL, OpenBase: srv.URL, Timeout: time.Second, OnCall: log.add})
	return &env{sim: sim, srv: srv, client: c, calls: log}
}

// authorize follows the authorize URL as automation does and returns the code.
func (e *env) authorize(t *testing.T, scope, user, decision string) (code, state string) {
	t.Helper()
	u := e.client.AuthorizeURL(oaID, "https://app.example.com/_wxgate/callback", scope, "abc123")
	u = strings.TrimSuffix(u, "#wechat_redirect") + "&sim_user=" + user + "&sim_decision=" + decision
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

func TestAuthorizeURLOrder(t *testing.T) {
	c := wechat.New(wechat.Config{})
	got := c.AuthorizeURL("wxAPP", "https://a.example.com/cb?x=1", "snsapi_base", "S")
	want := "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxAPP&redirect_uri=https%3A%2F%2Fa.example.com%2Fcb%3Fx%3D1&response_type=code&scope=snsapi_base&state=S&connect_redirect=1#wechat_redirect"
	if got != want {
		t.Errorf("AuthorizeURL = %q, want %q", got, want)
	}
}

// TestQRConnectURLs: the website app's page, whole and as wxLogin.js
// frames it, on the production host and on another base.
func TestQRConnectURLs(t *testing.T) {
	c := wechat.New(wechat.Config{})
	full := "https://open.weixin.qq.com/connect/qrconnect?appid=wxWEB&redirect_uri=https%3A%2F%2Fa.example.com%2Fcb&response_type=code&scope=snsapi_login&state=S&lang=cn"
	if got := c.QRConnectURL("wxWEB", "https://a.example.com/cb", "S"); got != full+"#wechat_redirect" {
		t.Errorf("QRConnectURL = %q", got)
	}
	if got := c.QRConnectFrameURL("wxWEB", "https://a.example.com/cb", "S"); got != full+"&login_type=jssdk&self_redirect=false" {
		t.Errorf("QRConnectFrameURL = %q", got)
	}
	if got := c.OpenOrigin(); got != "https://open.weixin.qq.com" {
		t.Errorf("OpenOrigin = %q", got)
	}
	sim := wechat.New(wechat.Config{OpenBase: "http://localhost:9300/"})
	if got := sim.OpenOrigin(); got != "http://localhost:9300" {
		t.Errorf("OpenOrigin with open_base http://localhost:9300/ = %q", got)
	}
}

func TestExchangeAndUserInfo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	app := wechat.App{AppID: oaID, Secret: oaSecret}
	code, state := e.authorize(t, "snsapi_userinfo", "alice", "allow")
	if len(code) != 32 || state != "abc123" {
		t.Fatalf("code %q state %q", code, state)
	}
	tok, err := e.client.ExchangeCode(ctx, app, code)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := e.sim.User(oaID, "alice")
	if tok.OpenID != alice.OpenID || tok.UnionID != alice.UnionID || tok.Scope != "snsapi_userinfo" {
		t.Errorf("token identity = %q %q %q, want %q %q snsapi_userinfo", tok.OpenID, tok.UnionID, tok.Scope, alice.OpenID, alice.UnionID)
	}
	info, err := e.client.UserInfo(ctx, tok.AccessToken, tok.OpenID, "")
	if err != nil {
		t.Fatal(err)
	}
	if info.Nickname != alice.Nickname {
		t.Errorf("nickname = %q, want %q", info.Nickname, alice.Nickname)
	}
	if err := e.client.CheckUserToken(ctx, tok.AccessToken, tok.OpenID); err != nil {
		t.Errorf("CheckUserToken: %v", err)
	}

	// Codes are single use: the second exchange is 40163, and is not retried.
	_, err = e.client.ExchangeCode(ctx, app, code)
	if !errors.Is(err, &wechat.Error{Code: wechat.CodeCodeUsed}) {
		t.Errorf("second exchange: %v, want errcode 40163", err)
	}
	_, err = e.client.ExchangeCode(ctx, app, "0123456789abcdef0123456789abcdef")
	if c, _ := wechat.Code(err); c != wechat.CodeInvalidCode {
		t.Errorf("random code: %v, want 40029", err)
	}
	_, err = e.client.ExchangeCode(ctx, wechat.App{AppID: oaID, Secret: "wrong"}, code)
	if c, _ := wechat.Code(err); c != wechat.CodeInvalidSecret {
		t.Errorf("wrong secret: %v, want 40125", err)
	}
}

func TestUserTokenLifetimes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	code, _ := e.authorize(t, "snsapi_base", "bob", "allow")
	tok, err := e.client.ExchangeCode(ctx, wechat.App{AppID: oaID, Secret: oaSecret}, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UserInfo(ctx, tok.AccessToken, tok.OpenID, ""); !wechat.HasCode(err, wechat.CodeUnauthorized) {
		t.Errorf("userinfo with a base token: %v, want 48001", err)
	}
	// Within its life, refresh returns the same access token.
	r1, err := e.client.RefreshUserToken(ctx, oaID, tok.RefreshToken)
	if err != nil || r1.AccessToken != tok.AccessToken {
		t.Fatalf("refresh while valid: %v, same token %v", err, r1 != nil && r1.AccessToken == tok.AccessToken)
	}
	e.sim.Advance(2*time.Hour + time.Second)
	if err := e.client.CheckUserToken(ctx, tok.AccessToken, tok.OpenID); !wechat.HasCode(err, wechat.CodeTokenExpired) {
		t.Errorf("sns/auth after 2h: %v, want 42001", err)
	}
	r2, err := e.client.RefreshUserToken(ctx, oaID, tok.RefreshToken)
	if err != nil || r2.AccessToken == tok.AccessToken {
		t.Fatalf("refresh after expiry: %v, new token %v", err, r2 != nil && r2.AccessToken != tok.AccessToken)
	}
	e.sim.Advance(30 * 24 * time.Hour)
	if _, err := e.client.RefreshUserToken(ctx, oaID, tok.RefreshToken); !wechat.HasCode(err, wechat.CodeRefreshExpired) {
		t.Errorf("refresh after 30 days: %v, want 42002", err)
	}
	if _, err := e.client.RefreshUserToken(ctx, oaID, "nonsense"); !wechat.HasCode(err, wechat.CodeInvalidRefresh) {
		t.Errorf("unknown refresh token: %v, want 40030", err)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		fault     wechatsim.Fault
		exchange  bool // the call is a code exchange (never retried)
		wantCalls int
		wantErr   bool
	}{
		{"busy then ok", wechatsim.Fault{Errcode: -1, Times: 1}, false, 2, false},
		{"5xx then ok", wechatsim.Fault{HTTPStatus: 502, Times: 2}, false, 3, false},
		{"not json", wechatsim.Fault{Body: "<html>oops</html>", Times: 3}, false, 3, true},
		{"no retry on other codes", wechatsim.Fault{Errcode: 40001, Times: 1}, false, 1, true},
		{"exchange never retried", wechatsim.Fault{Errcode: -1, Times: 1}, true, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			code, _ := e.authorize(t, "snsapi_userinfo", "carol", "allow")
			app := wechat.App{AppID: oaID, Secret: oaSecret}
			var tok *wechat.UserToken
			if !tc.exchange {
				var err error
				if tok, err = e.client.ExchangeCode(ctx, app, code); err != nil {
					t.Fatal(err)
				}
			}
			path := "/sns/userinfo"
			if tc.exchange {
				path = "/sns/oauth2/access_token"
			}
			f := tc.fault
			f.Path = path
			e.sim.InjectFault(f)
			before := e.sim.Calls()[path]
			var err error
			if tc.exchange {
				_, err = e.client.ExchangeCode(ctx, app, code)
			} else {
				_, err = e.client.UserInfo(ctx, tok.AccessToken, tok.OpenID, "")
			}
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, want error %v", err, tc.wantErr)
			}
			if got := e.sim.Calls()[path] - before; got != tc.wantCalls {
				t.Errorf("calls to %s = %d, want %d", path, got, tc.wantCalls)
			}
		})
	}
}

func TestTimeoutIsUnavailable(t *testing.T) {
	e := newEnv(t)
	c := wechat.New(wechat.Config{APIBase: e.srv.URL, Timeout: 50 * time.Millisecond, Retries: -1})
	e.sim.InjectFault(wechatsim.Fault{Path: "/sns/auth", DelayMS: 500})
	err := c.CheckUserToken(context.Background(), "tok", "oid")
	if !errors.Is(err, wechat.ErrUnavailable) {
		t.Errorf("slow WeChat: %v, want ErrUnavailable", err)
	}
}

// TestErrorsHideSecrets checks that neither the AppSecret nor a token
// reaches an error message, even when the transport fails with the URL.
func TestErrorsHideSecrets(t *testing.T) {
	c := wechat.New(wechat.Config{APIBase: "http://127.0.0.1:1", Timeout: 200 * time.Millisecond, Retries: -1})
	_, err := c.ExchangeCode(context.Background(), wechat.App{AppID: "wx1", Secret: "TOPSECRET"}, "code")
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Errorf("error %q leaks the secret", err)
	}
	_, err = c.UserInfo(context.Background(), "TOKENVALUE", "oid", "")
	if err == nil || strings.Contains(err.Error(), "TOKENVALUE") {
		t.Errorf("error %q leaks the token", err)
	}
	s := wechat.Secret("TOPSECRET")
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s %v %q %#v", s, s, s, s)
	if strings.Contains(buf.String(), "TOPSECRET") {
		t.Errorf("formatted secret leaks: %s", buf.String())
	}
}
