// Package wechat is a client for the WeChat APIs the gateway uses: the
// browser authorization URLs, the user-token (sns) APIs, and typed errors
// built from WeChat's errcode. See WECHAT-API.md for the contract.
package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Production hosts (WECHAT-API.md section 0).
const (
	DefaultAPIBase  = "https://api.weixin.qq.com"
	DefaultOpenBase = "https://open.weixin.qq.com"
)

// Config configures a Client; it is the [wechat] section of gateway.toml.
type Config struct {
	// APIBase is the JSON API base URL. Default: https://api.weixin.qq.com.
	APIBase string `toml:"api_base"`
	// OpenBase is the browser-page base URL. Default: https://open.weixin.qq.com.
	OpenBase string `toml:"open_base"`
	// Timeout bounds each attempt of each call. Default: 5s.
	Timeout time.Duration `toml:"timeout"`
	// Retries is how many times an idempotent call is retried after a -1
	// errcode or a transport failure. A code exchange is never retried.
	// Default: 2. Negative means no retries.
	Retries int `toml:"retries"`
	// AppTokenSource is where app access tokens come from: "stable_token"
	// (default; WeChat returns the same token to every caller while it is
	// valid) or "token" (/cgi-bin/token; every call replaces the token).
	AppTokenSource string `toml:"app_token_source"`

	OfficialAccount AppConfig `toml:"official_account"`
	Website         AppConfig `toml:"website"`
	MiniProgram     AppConfig `toml:"miniprogram"`
	MobileApp       AppConfig `toml:"app"`

	// HTTPClient sends the requests. Nil means a client of its own; never
	// http.DefaultClient.
	HTTPClient *http.Client `toml:"-"`
	// OnCall, if set, is called after every attempt with the endpoint path,
	// the result ("0" for success, the errcode, or "unavailable") and the
	// attempt's duration. It is the metrics hook.
	OnCall func(endpoint, result string, d time.Duration) `toml:"-"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.APIBase == "" {
		c.APIBase = DefaultAPIBase
	}
	if c.OpenBase == "" {
		c.OpenBase = DefaultOpenBase
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 2
	}
	if c.AppTokenSource == "" {
		c.AppTokenSource = "stable_token"
	}
}

// Client calls WeChat. It is safe for concurrent use.
type Client struct {
	apiBase  string
	openBase string
	timeout  time.Duration
	retries  int
	hc       *http.Client
	onCall   func(endpoint, result string, d time.Duration)
	// backoff is the base delay before the first retry; doubled each time.
	backoff time.Duration
}

// New returns a Client for cfg. Zero fields take their defaults.
func New(cfg Config) *Client {
	cfg.SetDefaults()
	hc := cfg.HTTPClient
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		hc = &http.Client{Transport: t}
	}
	retries := cfg.Retries
	if retries < 0 {
		retries = 0
	}
	return &Client{
		apiBase:  strings.TrimRight(cfg.APIBase, "/"),
		openBase: strings.TrimRight(cfg.OpenBase, "/"),
		timeout:  cfg.Timeout,
		retries:  retries,
		hc:       hc,
		onCall:   cfg.OnCall,
		backoff:  100 * time.Millisecond,
	}
}

// AuthorizeURL is the official-account authorization page (WECHAT-API.md
// section 1). WeChat checks the parameter order, so it is built by hand:
// appid, redirect_uri, response_type, scope, state, connect_redirect, then
// the #wechat_redirect fragment. connect_redirect=1 stops the double
// callbacks WeChat's Android client otherwise makes.
func (c *Client) AuthorizeURL(appID, redirectURI, scope, state string) string {
	return c.openBase + "/connect/oauth2/authorize?appid=" + url.QueryEscape(appID) +
		"&redirect_uri=" + url.QueryEscape(redirectURI) +
		"&response_type=code&scope=" + url.QueryEscape(scope) +
		"&state=" + url.QueryEscape(state) +
		"&connect_redirect=1#wechat_redirect"
}

// QRConnectURL is the website-app QR login page (WECHAT-API.md section 2).
func (c *Client) QRConnectURL(appID, redirectURI, state string) string {
	return c.openBase + "/connect/qrconnect?appid=" + url.QueryEscape(appID) +
		"&redirect_uri=" + url.QueryEscape(redirectURI) +
		"&response_type=code&scope=snsapi_login&state=" + url.QueryEscape(state) +
		"&lang=cn#wechat_redirect"
}

// QRConnectFrameURL is the qrconnect page as WeChat's wxLogin.js embeds it
// in an iframe (WECHAT-API.md section 2): QRConnectURL's parameters in
// their order, then login_type=jssdk and self_redirect=false, so that the
// consent navigates the top window rather than the frame; no fragment, as
// wxLogin.js sends none.
func (c *Client) QRConnectFrameURL(appID, redirectURI, state string) string {
	u, _, _ := strings.Cut(c.QRConnectURL(appID, redirectURI, state), "#")
	return u + "&login_type=jssdk&self_redirect=false"
}

// OpenOrigin is the scheme and host of the browser pages (open_base), what
// a page that frames them must allow.
func (c *Client) OpenOrigin() string {
	u, err := url.Parse(c.openBase)
	if err != nil || u.Host == "" {
		return DefaultOpenBase
	}
	return u.Scheme + "://" + u.Host
}

// UserToken is the answer of /sns/oauth2/access_token and
// /sns/oauth2/refresh_token.
type UserToken struct {
	AccessToken    Secret `json:"access_token"`
	ExpiresIn      int    `json:"expires_in"`
	RefreshToken   Secret `json:"refresh_token"`
	OpenID         string `json:"openid"`
	Scope          string `json:"scope"`
	UnionID        string `json:"unionid"`
	IsSnapshotUser int    `json:"is_snapshotuser"`
}

// UserInfo is the answer of /sns/userinfo.
type UserInfo struct {
	OpenID     string   `json:"openid"`
	Nickname   string   `json:"nickname"`
	Sex        int      `json:"sex"`
	Province   string   `json:"province"`
	City       string   `json:"city"`
	Country    string   `json:"country"`
	HeadImgURL string   `json:"headimgurl"`
	Privilege  []string `json:"privilege"`
	UnionID    string   `json:"unionid"`
}

// ExchangeCode redeems an OAuth code for a user token. It is never retried:
// a code is single use, so a retry after a lost answer can only give 40163.
func (c *Client) ExchangeCode(ctx context.Context, app App, code string) (*UserToken, error) {
	q := url.Values{
		"appid":      {app.AppID},
		"secret":     {app.Secret.Reveal()},
		"code":       {code},
		"grant_type": {"authorization_code"},
	}
	var t UserToken
	if err := c.call(ctx, http.MethodGet, "/sns/oauth2/access_token", q, nil, false, &t); err != nil {
		return nil, fmt.Errorf("exchanging code: %w", err)
	}
	if err := checkToken("/sns/oauth2/access_token", t.AccessToken, &t.ExpiresIn); err != nil {
		return nil, fmt.Errorf("exchanging code: %w", err)
	}
	if t.OpenID == "" {
		// Whose token it is decides whose login it is: without an openid
		// it is nobody's, and every such login would be the same user.
		return nil, fmt.Errorf("exchanging code: %w: answer without an openid", ErrUnavailable)
	}
	return &t, nil
}

// RefreshUserToken renews a user access token with its refresh token.
func (c *Client) RefreshUserToken(ctx context.Context, appID string, refreshToken Secret) (*UserToken, error) {
	q := url.Values{
		"appid":         {appID},
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken.Reveal()},
	}
	var t UserToken
	if err := c.call(ctx, http.MethodGet, "/sns/oauth2/refresh_token", q, nil, true, &t); err != nil {
		return nil, fmt.Errorf("refreshing sns token: %w", err)
	}
	if err := checkToken("/sns/oauth2/refresh_token", t.AccessToken, &t.ExpiresIn); err != nil {
		return nil, fmt.Errorf("refreshing sns token: %w", err)
	}
	return &t, nil
}

// UserInfo fetches the profile of the user a snsapi_userinfo token belongs to.
// lang is zh_CN, zh_TW or en; empty means zh_CN.
func (c *Client) UserInfo(ctx context.Context, accessToken Secret, openID, lang string) (*UserInfo, error) {
	if lang == "" {
		lang = "zh_CN"
	}
	q := url.Values{"access_token": {accessToken.Reveal()}, "openid": {openID}, "lang": {lang}}
	var u UserInfo
	if err := c.call(ctx, http.MethodGet, "/sns/userinfo", q, nil, true, &u); err != nil {
		return nil, fmt.Errorf("fetching userinfo: %w", err)
	}
	if u.OpenID != openID {
		// Another person's profile (its unionid among it) must not be
		// taken for this one's.
		return nil, fmt.Errorf("fetching userinfo: %w: answer for another openid", ErrUnavailable)
	}
	return &u, nil
}

// CheckUserToken reports, through a nil error, that a user access token is
// still valid for openID (/sns/auth).
func (c *Client) CheckUserToken(ctx context.Context, accessToken Secret, openID string) error {
	q := url.Values{"access_token": {accessToken.Reveal()}, "openid": {openID}}
	if err := c.call(ctx, http.MethodGet, "/sns/auth", q, nil, true, nil); err != nil {
		return fmt.Errorf("checking sns token: %w", err)
	}
	return nil
}

// maxTokenLife is the longest lifetime, in seconds, taken from an answer:
// WeChat documents 7200 for user and app access tokens. A longer claim
// (up to one that overflows a time.Duration) would keep a token in use
// long after WeChat dropped it; a shorter one is taken as it is.
const maxTokenLife = 7200

// checkToken checks the token and lifetime of an answer without errcode,
// and bounds the lifetime by maxTokenLife. An answer without a token or
// with no lifetime left (a proxy's "{}", a broken answer) is not a token:
// it is an unavailable WeChat, so the current token is kept and the next
// attempt backs off, instead of an empty or expired token replacing a
// valid one and every request asking again.
func checkToken(endpoint string, token Secret, expiresIn *int) error {
	if token == "" || *expiresIn <= 0 {
		return fmt.Errorf("%w: %s: answer without a token or its lifetime (expires_in %d)", ErrUnavailable, endpoint, *expiresIn)
	}
	*expiresIn = min(*expiresIn, maxTokenLife)
	return nil
}

// maxBody bounds what is read of one WeChat answer.
const maxBody = 1 << 20

// call performs one API call with per-attempt timeouts, retrying idempotent
// calls on -1 and on ErrUnavailable with exponential backoff and full jitter.
func (c *Client) call(ctx context.Context, method, endpoint string, q url.Values, body any, idempotent bool, out any) error {
	attempts := 1
	if idempotent {
		attempts += c.retries
	}
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			d := c.backoff << (i - 1)
			d = d/2 + rand.N(d/2+1)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: %s: %w", ErrUnavailable, endpoint, ctx.Err())
			case <-t.C:
			}
		}
		err = c.attempt(ctx, method, endpoint, q, body, out)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

func retryable(err error) bool {
	return errors.Is(err, ErrUnavailable) || HasCode(err, CodeSystemBusy)
}

func (c *Client) attempt(ctx context.Context, method, endpoint string, q url.Values, body any, out any) (err error) {
	start := time.Now()
	defer func() {
		if c.onCall != nil {
			c.onCall(endpoint, resultLabel(err), time.Since(start))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := c.apiBase + endpoint
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding %s request: %w", endpoint, err)
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		// The URL holds secrets; report the endpoint only.
		return fmt.Errorf("building %s request: invalid base URL", endpoint)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error prints the URL, which carries the secret or token in its
		// query: keep only the underlying cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%w: %s: reading answer: %w", ErrUnavailable, endpoint, err)
	}
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%w: %s: HTTP %d", ErrUnavailable, endpoint, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s: unexpected HTTP %d", ErrUnavailable, endpoint, resp.StatusCode)
	}
	return decode(endpoint, b, out)
}

// decode turns a WeChat answer into out or an *Error. Success is an absent
// or zero errcode (WECHAT-API.md section 0); Content-Type is not trusted.
func decode(endpoint string, b []byte, out any) error {
	var head struct {
		Errcode *int   `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("%w: %s: answer is not JSON", ErrUnavailable, endpoint)
	}
	if head.Errcode != nil && *head.Errcode != 0 {
		return &Error{Code: *head.Errcode, Msg: head.Errmsg, Endpoint: endpoint}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: %s: decoding answer: %w", ErrUnavailable, endpoint, err)
	}
	return nil
}

func resultLabel(err error) string {
	if err == nil {
		return "0"
	}
	if c, ok := Code(err); ok {
		return strconv.Itoa(c)
	}
	return "unavailable"
}
