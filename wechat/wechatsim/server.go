// Package wechatsim is a faithful stand-in for WeChat's servers: the browser
// authorization pages of open.weixin.qq.com and the JSON APIs of
// api.weixin.qq.com that WECHAT-API.md lists, with their validations, error
// codes and lifetimes, driven by a clock of its own. Tests, `wxgate dev` and
// `wxgate simulate` run it; nothing in it is used against real WeChat.
//
// Beside WeChat's own endpoints it serves test hooks under /_sim/ (see
// DESIGN.md): minting codes, injecting faults, moving the clock, counting calls.
package wechatsim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// AppType is the kind of WeChat app.
type AppType string

// App types, as /_sim/apps reports them.
const (
	OfficialAccount AppType = "official_account"
	Website         AppType = "website"
	MiniProgram     AppType = "miniprogram"
	MobileApp       AppType = "app"
)

// App is an app registered with the simulator.
type App struct {
	AppID  string
	Secret string
	Type   AppType
	// OpenPlatformID is the open-platform account the app is bound to. Apps
	// bound to the same account see the same unionid for a user; empty means
	// unbound (no unionid).
	OpenPlatformID string
	// Domain is the one authorization domain (exact host) redirect_uri must
	// use, for official accounts and website apps. Empty accepts any host.
	Domain string
	// IPWhitelist, if not empty, lists the client IPs allowed to fetch app
	// access tokens; others get 40164.
	IPWhitelist []string
}

// Lifetimes from WECHAT-API.md.
const (
	oauthCodeTTL    = 5 * time.Minute
	qrCodeTTL       = 10 * time.Minute
	jsCodeTTL       = 5 * time.Minute
	phoneCodeTTL    = 5 * time.Minute
	userTokenTTL    = 7200 * time.Second
	refreshTokenTTL = 30 * 24 * time.Hour
	appTokenTTL     = 7200 * time.Second
	oldTokenGrace   = 5 * time.Minute
	stableEarly     = 5 * time.Minute
	forceInterval   = 30 * time.Second
	forcePerDay     = 20
	tokenPerDay     = 2000
)

// Server is the simulator. Its zero value is not usable; call New. It
// implements http.Handler and is safe for concurrent use.
type Server struct {
	mux *http.ServeMux

	// mu protects every field below.
	mu     sync.Mutex
	apps   map[string]*App
	offset time.Duration // added to the real time: the simulator's clock

	codes         map[string]*code
	userTokens    map[string]*userToken    // by access_token
	refreshTokens map[string]*refreshToken // by refresh_token
	sessionKeys   map[string]string        // appid+"|"+openid -> session_key
	appTokens     map[string]*appTokens    // by appid
	users         map[string]bool          // test-user names seen
	faults        map[string][]*Fault
	calls         map[string]int
	lifetimes     Lifetimes
}

// Lifetimes are the token lifetimes the simulator issues. Tests shorten
// them (POST /_sim/lifetimes) so that expiry happens within a test.
type Lifetimes struct {
	SNSAccessToken time.Duration
	AppAccessToken time.Duration
	RefreshToken   time.Duration
}

// SetLifetimes replaces the lifetimes of tokens issued from now on; a zero
// field keeps its current value.
func (s *Server) SetLifetimes(l Lifetimes) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.SNSAccessToken > 0 {
		s.lifetimes.SNSAccessToken = l.SNSAccessToken
	}
	if l.AppAccessToken > 0 {
		s.lifetimes.AppAccessToken = l.AppAccessToken
	}
	if l.RefreshToken > 0 {
		s.lifetimes.RefreshToken = l.RefreshToken
	}
}

// New returns a simulator with the given apps registered.
func New(apps ...App) *Server {
	s := &Server{
		apps:          map[string]*App{},
		codes:         map[string]*code{},
		userTokens:    map[string]*userToken{},
		refreshTokens: map[string]*refreshToken{},
		sessionKeys:   map[string]string{},
		appTokens:     map[string]*appTokens{},
		users:         map[string]bool{"alice": true, "bob": true, "carol": true},
		faults:        map[string][]*Fault{},
		calls:         map[string]int{},
		lifetimes:     Lifetimes{SNSAccessToken: userTokenTTL, AppAccessToken: appTokenTTL, RefreshToken: refreshTokenTTL},
	}
	for _, a := range apps {
		s.Register(a)
	}
	s.routes()
	return s
}

// Register adds or replaces an app.
func (s *Server) Register(a App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[a.AppID] = &a
}

// Now is the simulator's clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Server) now() time.Time { return time.Now().Add(s.offset) }

// Advance moves the simulator's clock forward by d.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

// Calls returns how many times each WeChat endpoint was called.
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

func (s *Server) routes() {
	m := http.NewServeMux()
	// Browser pages (open.weixin.qq.com).
	m.HandleFunc("/connect/oauth2/authorize", s.authorize)
	m.HandleFunc("/connect/qrconnect", s.qrconnect)
	// JSON APIs (api.weixin.qq.com).
	m.HandleFunc("/sns/oauth2/access_token", s.api(s.snsAccessToken))
	m.HandleFunc("/sns/oauth2/refresh_token", s.api(s.snsRefreshToken))
	m.HandleFunc("/sns/userinfo", s.api(s.snsUserInfo))
	m.HandleFunc("/sns/auth", s.api(s.snsAuth))
	m.HandleFunc("/sns/jscode2session", s.api(s.jscode2session))
	m.HandleFunc("/wxa/checksession", s.api(s.checkSession))
	m.HandleFunc("/wxa/business/getuserphonenumber", s.api(s.userPhoneNumber))
	m.HandleFunc("/cgi-bin/token", s.api(s.cgiToken))
	m.HandleFunc("/cgi-bin/stable_token", s.api(s.stableToken))
	// Test hooks.
	m.HandleFunc("/_sim/code", s.hookCode)
	m.HandleFunc("/_sim/phonecode", s.hookPhoneCode)
	m.HandleFunc("/_sim/fault", s.hookFault)
	m.HandleFunc("/_sim/clock", s.hookClock)
	m.HandleFunc("/_sim/lifetimes", s.hookLifetimes)
	m.HandleFunc("/_sim/stats", s.hookStats)
	m.HandleFunc("/_sim/apps", s.hookApps)
	m.HandleFunc("/_sim/user", s.hookUser)
	m.HandleFunc("/_sim/encrypt", s.hookEncrypt)
	s.mux = m
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// apiHandler answers one JSON API call with a value to encode, or an errcode.
type apiHandler func(r *http.Request) (any, int)

// api wraps an endpoint: it counts the call, applies injected faults, and
// writes WeChat's envelope (errors as HTTP 200 with errcode and errmsg).
func (s *Server) api(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.URL.Path]++
		f := s.takeFault(r.URL.Path)
		s.mu.Unlock()
		if f != nil && f.apply(w, r) {
			return
		}
		v, errcode := h(r)
		if errcode == 40164 {
			// WeChat names the caller's address, which is what an operator
			// must add to the whitelist.
			writeErrMsg(w, errcode, ipNotWhitelisted(r))
			return
		}
		if errcode != 0 {
			writeErr(w, errcode)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	// WeChat escapes "/" in JSON strings; do the same so clients are tested
	// against it.
	b = []byte(strings.ReplaceAll(string(b), "/", `\/`))
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeErr(w http.ResponseWriter, errcode int) { writeErrMsg(w, errcode, errmsg(errcode)) }

func writeErrMsg(w http.ResponseWriter, errcode int, msg string) {
	writeJSON(w, http.StatusOK, map[string]any{
		"errcode": errcode,
		"errmsg":  msg + ", rid: " + rid(),
	})
}

// ipNotWhitelisted is 40164's errmsg as WeChat writes it, with the
// caller's address in both families: "invalid ip 203.0.113.9 ipv6
// ::ffff:203.0.113.9, not in whitelist".
func ipNotWhitelisted(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	v6 := host
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		v6 = "::ffff:" + ip.To4().String()
	}
	return "invalid ip " + host + " ipv6 " + v6 + ", not in whitelist"
}

func rid() string {
	return randomString(8, hexDigits) + "-" + randomString(8, hexDigits) + "-" + randomString(8, hexDigits)
}

var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest",
	40002: "invalid grant_type",
	40003: "invalid openid",
	40013: "invalid appid",
	40014: "invalid access_token",
	40029: "invalid code",
	40030: "invalid refresh_token",
	40125: "invalid appsecret",
	40163: "code been used",
	40164: "invalid ip, not in whitelist",
	40243: "AppSecret已被冻结，请登录小程序平台解冻后再次调用。",
	50004: "禁止使用token接口",
	50007: "账号已冻结",
	89501: "此IP正在等待管理员确认,请联系管理员",
	89503: "此IP调用需要管理员确认,请联系管理员",
	89506: "24小时内该IP被管理员拒绝调用两次，24小时内不可再使用该IP调用",
	89507: "1小时内该IP被管理员拒绝调用一次，1小时内不可再使用该IP调用",
	40226: "code blocked",
	41001: "access_token missing",
	41002: "appid missing",
	41003: "refresh_token missing",
	41004: "appsecret missing",
	41008: "missing code",
	42001: "access_token expired",
	42002: "refresh_token expired",
	42003: "oauth_code expired",
	43002: "require POST method",
	45009: "reach max api daily quota limit",
	45011: "api minute-quota reach limit  mustslower  retry next minute",
	48001: "api unauthorized",
	87007: "session_key is not existed or expired",
	87008: "invalid sig_method",
	87009: "invalid signature",
}

func errmsg(code int) string {
	if m, ok := errmsgs[code]; ok {
		return m
	}
	return "error"
}

const (
	alnum     = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	hexDigits = "0123456789abcdef"
)

// randomString returns n characters drawn uniformly from alphabet.
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	// 256 is a multiple of neither 62 nor 16 exactly for 62; the bias of
	// b%62 is irrelevant for a simulator's tokens.
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// accessTokenString mimics WeChat's token shape: 110-160 characters.
func accessTokenString() string {
	return randomString(136, alnum+"_-")
}

// derive maps (kind, scope, user) to a stable identifier: identities are
// deterministic so tests can predict them (DESIGN.md "Identities are
// deterministic").
func derive(kind, scope, user string, n int) string {
	m := hmac.New(sha256.New, []byte("wechatsim:"+kind))
	m.Write([]byte(scope))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return "o" + base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:n-1]
}

func (s *Server) openID(appID, user string) string { return derive("openid", appID, user, 28) }

func (s *Server) unionID(a *App, user string) string {
	if a.OpenPlatformID == "" {
		return ""
	}
	return derive("unionid", a.OpenPlatformID, user, 29)
}

// Nickname is the test user's nickname. It is not ASCII on purpose, so that
// header encoding is exercised.
func Nickname(user string) string { return user + "·测试" }

func avatarURL(openID string) string {
	return "https://thirdwx.qlogo.cn/mmopen/vi_32/" + openID + "/132"
}

func (s *Server) sortedUsers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.users))
	for u := range s.users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}
