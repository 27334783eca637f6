package wechatsim

import (
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/wxgate/wxgate/internal/qrimg"
)

// code is an OAuth code, a wx.login js_code, or a phone code.
type code struct {
	appID    string
	user     string
	scope    string // snsapi_base, snsapi_userinfo, snsapi_login; "" for js and phone codes
	kind     codeKind
	expires  time.Time
	used     bool
	snapshot bool   // issued on a snapshot page: the exchange gives a virtual user
	phone    string // phone codes only
}

type codeKind int

const (
	oauthCode codeKind = iota
	jsCode
	phoneCode
)

// issueCode stores a new code. Callers hold s.mu.
func (s *Server) issueCode(c *code, ttl time.Duration, length int, alphabet string) string {
	c.expires = s.now().Add(ttl)
	v := randomString(length, alphabet)
	s.codes[v] = c
	s.users[c.user] = true
	return v
}

// authorizeParams are the query parameters of the authorize pages, in the
// order WeChat checks them.
var authorizeOrder = []string{"appid", "redirect_uri", "response_type", "scope", "state"}

var stateRE = regexp.MustCompile(`^[a-zA-Z0-9]{0,128}$`)

// authorize serves /connect/oauth2/authorize, the official-account page.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	s.countPage(r.URL.Path)
	s.authorizePage(w, r, OfficialAccount)
}

// qrconnect serves /connect/qrconnect, the website-app QR page.
func (s *Server) qrconnect(w http.ResponseWriter, r *http.Request) {
	s.countPage(r.URL.Path)
	s.authorizePage(w, r, Website)
}

func (s *Server) countPage(path string) {
	s.mu.Lock()
	s.calls[path]++
	s.mu.Unlock()
}

func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request, want AppType) {
	q := r.URL.Query()
	appID, redirectURI, scope, state := q.Get("appid"), q.Get("redirect_uri"), q.Get("scope"), q.Get("state")

	if !inOrder(r.URL.RawQuery, authorizeOrder) {
		pageError(w, r, 10001, "参数错误 / parameters out of order")
		return
	}
	if appID == "" {
		pageError(w, r, 10012, "appid 参数错误")
		return
	}
	s.mu.Lock()
	app, ok := s.apps[appID]
	s.mu.Unlock()
	if !ok {
		pageError(w, r, 10012, "appid 参数错误")
		return
	}
	if app.Type != want {
		// An open-platform (website) appid on the official-account page, or
		// the reverse.
		pageError(w, r, 10016, "不支持的 appid 类型")
		return
	}
	if redirectURI == "" {
		pageError(w, r, 10011, "redirect_uri 参数错误")
		return
	}
	ru, err := url.Parse(redirectURI)
	if err != nil || (ru.Scheme != "http" && ru.Scheme != "https") || ru.Host == "" {
		pageError(w, r, 10003, "redirect_uri 参数错误")
		return
	}
	if app.Domain != "" && !strings.EqualFold(ru.Hostname(), app.Domain) && !strings.EqualFold(ru.Host, app.Domain) {
		pageError(w, r, 10003, "redirect_uri 域名与后台配置不一致")
		return
	}
	if q.Get("response_type") != "code" {
		pageError(w, r, 10001, "response_type 参数错误")
		return
	}
	if scope == "" {
		pageError(w, r, 10010, "scope 为空")
		return
	}
	if !scopeAllowed(want, scope) {
		pageError(w, r, 10005, "此公众号并没有这些 scope 的权限")
		return
	}
	if !stateRE.MatchString(state) {
		pageError(w, r, 10001, "state 参数错误")
		return
	}

	user, decision := q.Get("sim_user"), q.Get("sim_decision")
	if user == "" || decision == "" {
		if want == Website {
			s.qrPage(w, r, app)
			return
		}
		s.consentPage(w, r, app, scope)
		return
	}
	switch decision {
	case "allow", "snapshot":
		ttl := oauthCodeTTL
		if want == Website {
			ttl = qrCodeTTL
		}
		s.mu.Lock()
		c := s.issueCode(&code{
			appID: appID, user: user, scope: scope, kind: oauthCode,
			snapshot: decision == "snapshot" && scope == "snsapi_userinfo",
		}, ttl, 32, alnum)
		s.mu.Unlock()
		http.Redirect(w, r, withParams(redirectURI, "code", c, "state", state), http.StatusFound)
	case "deny":
		if want == Website {
			// QR login: a refusal never redirects (WECHAT-API.md section 2).
			renderPage(w, http.StatusOK, refusedPage, nil)
			return
		}
		// Official account: a redirect with state and no code.
		http.Redirect(w, r, withParams(redirectURI, "state", state), http.StatusFound)
	default:
		pageError(w, r, 10001, "sim_decision must be allow, deny or snapshot")
	}
}

func scopeAllowed(t AppType, scope string) bool {
	if t == Website {
		return scope == "snsapi_login"
	}
	for _, s := range strings.Split(scope, ",") {
		if s != "snsapi_base" && s != "snsapi_userinfo" {
			return false
		}
	}
	return true
}

// inOrder reports whether the keys of order that occur in rawQuery occur in
// that relative order. Other keys may come anywhere.
func inOrder(rawQuery string, order []string) bool {
	pos := 0
	for _, kv := range strings.Split(rawQuery, "&") {
		k, _, _ := strings.Cut(kv, "=")
		for i, want := range order {
			if k != want {
				continue
			}
			if i < pos {
				return false
			}
			pos = i
		}
	}
	return true
}

// withParams adds query parameters to u, before any fragment, with "&" when
// u already has a query (WECHAT-API.md section 1).
func withParams(u string, kv ...string) string {
	base, frag, hasFrag := strings.Cut(u, "#")
	var b strings.Builder
	b.WriteString(base)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(sep)
		b.WriteString(url.QueryEscape(kv[i]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(kv[i+1]))
		sep = "&"
	}
	if hasFrag {
		b.WriteByte('#')
		b.WriteString(frag)
	}
	return b.String()
}

func pageError(w http.ResponseWriter, _ *http.Request, errcode int, msg string) {
	// WeChat shows these as ordinary pages; the errcode is in the markup so
	// tests can read it.
	renderPage(w, http.StatusOK, errorPage, map[string]any{"Code": errcode, "Msg": msg})
}

func renderPage(w http.ResponseWriter, status int, t *template.Template, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = t.Execute(w, data)
}

func (s *Server) consentPage(w http.ResponseWriter, r *http.Request, app *App, scope string) {
	renderPage(w, http.StatusOK, consentPage, map[string]any{
		"Action":   r.URL.Path,
		"Hidden":   pageParams(r),
		"AppID":    app.AppID,
		"Userinfo": scope != "snsapi_base",
		"Snapshot": scope == "snsapi_userinfo",
		"Users":    s.sortedUsers(),
	})
}

// pageParams are the authorize page's own parameters, which its form
// carries on with the test user and decision.
func pageParams(r *http.Request) [][2]string {
	hidden := [][2]string{}
	for _, k := range append(authorizeOrder, "connect_redirect", "lang") {
		if v := r.URL.Query().Get(k); v != "" {
			hidden = append(hidden, [2]string{k, v})
		}
	}
	return hidden
}

// qrPage is the website app's QR page. A person sees a QR code, as on
// WeChat's page; here it holds the page's own URL, so a phone that can
// reach the simulator may scan it and answer there, and below it the
// consent for a test user, which stands in for the phone. Framed by
// wxLogin.js (login_type=jssdk), the answer navigates the top window
// unless self_redirect=true, as WeChat's does.
func (s *Server) qrPage(w http.ResponseWriter, r *http.Request, app *App) {
	hidden := pageParams(r)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// url.Values would sort the keys; the page checks their order.
	var b strings.Builder
	for i, kv := range hidden {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[0]) + "=" + url.QueryEscape(kv[1]))
	}
	qr, err := qrimg.DataURI(scheme+"://"+r.Host+r.URL.Path+"?"+b.String(), 200)
	if err != nil {
		pageError(w, r, 10001, "二维码生成失败")
		return
	}
	q := r.URL.Query()
	target := "_self"
	if q.Get("login_type") == "jssdk" && q.Get("self_redirect") != "true" {
		target = "_top"
	}
	renderPage(w, http.StatusOK, qrPage, map[string]any{
		"Action": r.URL.Path,
		"Hidden": hidden,
		"AppID":  app.AppID,
		"QR":     template.URL(qr),
		"Target": target,
		"Framed": q.Get("login_type") == "jssdk",
		"Users":  s.sortedUsers(),
	})
}

const pageHead = `<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>微信授权（模拟器）</title><style>
body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}
.sim{background:#fff3cd;padding:.3rem .6rem;border-radius:4px;font-size:.85rem}
button{padding:.5rem 1rem;margin:.25rem .25rem 0 0;border-radius:4px;border:1px solid #999;background:#fff}
button.ok{background:#07c160;color:#fff;border-color:#07c160}
label{display:block;margin:.3rem 0}</style></head><body>
<p class="sim">WeChat simulator — not WeChat</p>`

var consentPage = template.Must(template.New("consent").Parse(pageHead + `
<h1>授权登录</h1>
<p>应用 <code>{{.AppID}}</code> 申请{{if .Userinfo}}获取你的昵称、头像{{else}}获取你的身份标识（静默授权）{{end}}。</p>
<form method="get" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{index . 0}}" value="{{index . 1}}">{{end}}
<fieldset><legend>以哪个测试用户登录 / Test user</legend>
{{range $i, $u := .Users}}<label><input type="radio" name="sim_user" value="{{$u}}"{{if eq $i 0}} checked{{end}}> {{$u}}</label>{{end}}
</fieldset>
<button class="ok" name="sim_decision" value="allow">允许 Allow</button>
<button name="sim_decision" value="deny">拒绝 Refuse</button>
{{if .Snapshot}}<button name="sim_decision" value="snapshot">快照页 Snapshot</button>{{end}}
</form></body></html>`))

var qrPage = template.Must(template.New("qr").Parse(`<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>微信登录（模拟器）</title><style>
body{font-family:system-ui,sans-serif;margin:0 auto;padding:.4rem;max-width:28rem;color:#222;text-align:center;font-size:14px}
.sim{background:#fff3cd;padding:.2rem .5rem;border-radius:4px;font-size:12px;margin:0}
h1{font-size:16px;margin:.4rem 0}img{display:block;margin:0 auto;image-rendering:pixelated}
fieldset{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;padding:.2rem .4rem}legend{font-size:12px}
label{display:inline-block;margin:.1rem .4rem}
button{padding:.35rem .9rem;margin:.25rem .2rem 0;border-radius:4px;border:1px solid #999;background:#fff}
button.ok{background:#07c160;color:#fff;border-color:#07c160}</style></head><body{{if .Framed}} class="framed"{{end}}>
<p class="sim">WeChat simulator — not WeChat</p>
<h1>微信登录</h1>
<img src="{{.QR}}" alt="二维码 QR code" data-appid="{{.AppID}}">
<p>请使用微信扫描二维码登录<br><small>模拟器：在下方选择测试用户代替扫码</small></p>
<form method="get" action="{{.Action}}" target="{{.Target}}">
{{range .Hidden}}<input type="hidden" name="{{index . 0}}" value="{{index . 1}}">{{end}}
<fieldset><legend>测试用户 / Test user</legend>
{{range $i, $u := .Users}}<label><input type="radio" name="sim_user" value="{{$u}}"{{if eq $i 0}} checked{{end}}> {{$u}}</label>{{end}}
</fieldset>
<button class="ok" name="sim_decision" value="allow">允许 Allow</button>
<button name="sim_decision" value="deny" formtarget="_self">拒绝 Refuse</button>
</form></body></html>`))

var errorPage = template.Must(template.New("error").Parse(pageHead + `
<h1>出错了</h1><p data-errcode="{{.Code}}">错误码 {{.Code}}：{{.Msg}}</p></body></html>`))

var refusedPage = template.Must(template.New("refused").Parse(pageHead + `
<h1>你已取消此次登录</h1><p>You refused this login.</p></body></html>`))
