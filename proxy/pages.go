package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// message is one page's text in both languages.
type message struct {
	zhTitle, zhBody, enTitle, enBody string
}

// messages are every page wxgate shows. zh-CN comes first; English is served
// when Accept-Language prefers it.
var messages = map[string]message{
	"open_in_wechat": {"请在微信中打开", "请用手机微信扫描下方二维码，或复制本页链接在微信中打开，以完成登录。",
		"Open this page in WeChat", "Scan the QR code below with WeChat on your phone, or copy this page's link and open it in WeChat, to log in."},
	"open_in_wechat_phone": {"请在微信中打开", "请复制本页链接，在微信客户端中打开以完成登录。",
		"Open this page in WeChat", "Copy this page's link and open it in the WeChat app to log in."},
	"miniprogram_webview": {"请从小程序重新进入", "此页面在小程序中打开，需由小程序完成登录。请返回小程序后重新进入本页。",
		"Open this page from the mini program", "This page is open inside a mini program, which logs you in. Go back to the mini program and open this page again."},
	"qr_login": {"微信扫码登录", "请使用手机微信扫描二维码登录。",
		"Log in with WeChat", "Scan the QR code with WeChat on your phone to log in."},
	"wecom": {"请在微信中打开", "企业微信不支持此登录方式，请在微信客户端中打开本页。",
		"Open this page in WeChat", "WeCom cannot use this login. Open this page in the WeChat app."},
	"refused": {"你已取消授权", "你拒绝了授权，因此未能登录。如需继续，请重新授权。",
		"You declined", "You declined the authorization, so you are not logged in. Try again to continue."},
	"login_expired": {"登录已过期", "此登录链接已过期或已被使用，请重新登录。",
		"Login link expired", "This login link has expired or was already used. Please log in again."},
	"other_browser": {"无法完成登录", "此登录是在另一个浏览器中发起的，请在同一浏览器中重新登录。",
		"Login started elsewhere", "This login was started in another browser. Please log in again in this one."},
	"code_invalid": {"登录失败", "微信授权码无效或已使用，请重新登录。",
		"Login failed", "WeChat's authorization code was invalid or already used. Please log in again."},
	"snapshot": {"需要授权", "当前为快照页模式，无法获取你的身份。请点击下方按钮完成授权后继续。",
		"Authorization needed", "WeChat showed a read-only snapshot, so your identity is unknown. Authorize to continue."},
	"wechat_error": {"微信服务出错", "微信返回了错误，请稍后重试。",
		"WeChat error", "WeChat returned an error. Please try again later."},
	"wechat_unavailable": {"微信暂时不可用", "暂时无法连接微信，请稍后重试。",
		"WeChat unavailable", "WeChat cannot be reached right now. Please try again later."},
	"login_required": {"需要登录", "请先登录后再访问此页面。",
		"Login required", "Please log in to open this page."},
	"insufficient_scope": {"需要授权", "此页面需要获取你的微信昵称和头像。",
		"Authorization needed", "This page needs your WeChat nickname and avatar."},
	"forbidden": {"无权访问", "你没有访问此页面的权限。",
		"Forbidden", "You are not allowed to open this page."},
	"bad_request": {"请求无效", "请求的地址或参数无效。",
		"Bad request", "The address or its parameters are invalid."},
	"not_found": {"页面不存在", "找不到此页面。",
		"Not found", "This page does not exist."},
	"upstream_down": {"服务暂不可用", "后端服务暂时无法访问，请稍后重试。",
		"Service unavailable", "The application behind this gateway cannot be reached. Please try again later."},
	"upstream_timeout": {"服务响应超时", "后端服务响应超时，请稍后重试。",
		"Gateway timeout", "The application behind this gateway took too long to answer. Please try again later."},
	"unavailable": {"服务暂不可用", "服务暂时不可用，请稍后重试。你的登录状态不受影响。",
		"Temporarily unavailable", "The service is temporarily unavailable. You are still logged in; please try again."},
	"internal": {"服务出错", "服务出现内部错误，请稍后重试。",
		"Server error", "Something went wrong on our side. Please try again later."},
	"too_many_logins": {"登录请求过多", "你所在的网络发起了过多登录，请几分钟后再试。",
		"Too many logins", "Too many logins were started from your network. Please try again in a few minutes."},
	"too_many_websockets": {"连接过多", "你所在的网络打开了过多实时连接，请关闭一些页面后重试。",
		"Too many connections", "Too many live connections are open from your network. Close some pages and try again."},
	"logout_confirm": {"退出登录", "确定要退出登录吗？",
		"Log out", "Do you want to log out?"},
	"logged_out": {"已退出", "你已退出登录。",
		"Logged out", "You have logged out."},
}

// links' labels.
var linkLabels = map[string][2]string{
	"retry":       {"重新登录", "Log in again"},
	"again":       {"重试", "Try again"},
	"cancel":      {"取消", "Cancel"},
	"login":       {"登录", "Log in"},
	"dev":         {"开发模式：模拟在微信中继续", "Dev mode: continue as if inside WeChat"},
	"logout":      {"退出登录", "Log out"},
	"authorize":   {"授权", "Authorize"},
	"copy":        {"复制链接", "Copy link"},
	"copied":      {"已复制", "Copied"},
	"qr_alt":      {"本页链接的二维码", "QR code of this page's link"},
	"qr_frame":    {"微信登录二维码", "WeChat login QR code"},
	"qr_fallback": {"二维码无法显示？打开微信登录页", "QR code not showing? Open WeChat's login page"},
}

// lang picks "zh" or "en" from Accept-Language: the first of the two the
// browser lists, by preference; zh-CN when it accepts neither.
func lang(c *fiber.Ctx) string {
	if l := preferredLang(c.Get(fiber.HeaderAcceptLanguage)); l != "" {
		return l
	}
	return "zh"
}

// preferredLang is "zh" or "en", whichever of the two Accept-Language
// value al prefers, or "" when it accepts neither: it names neither, or
// only with q=0, which means "not this one" (RFC 9110 section 12.4.2).
func preferredLang(al string) string {
	best, bestQ := "", 0.0
	for part := range strings.SplitSeq(al, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= 0 && f <= 1) {
				continue // not a qvalue: ignored, as the whole element
			}
			q = f
		}
		tag = strings.ToLower(strings.TrimSpace(tag))
		var l string
		switch {
		case tag == "zh" || strings.HasPrefix(tag, "zh-"):
			l = "zh"
		case tag == "en" || strings.HasPrefix(tag, "en-"):
			l = "en"
		default:
			continue
		}
		if q > bestQ {
			best, bestQ = l, q
		}
	}
	return best
}

func describe(page, l string) string {
	m, ok := messages[page]
	if !ok {
		m = messages["internal"]
	}
	if l == "en" {
		return m.enBody
	}
	return m.zhBody
}

type pageLink struct {
	URL, Label string
	Primary    bool
}

type pageData struct {
	Lang, Title, Body, RequestID string
	Links                        []pageLink
	Form                         *pageForm
	Footer                       string
	// Link, if set, is shown selectable with a copy button (the button
	// needs the script; the link does not).
	Link, CopyLabel, CopiedLabel string
	// QR, if set, is a QR code image as a data: URI, made here.
	QR    template.URL
	QRAlt string
	// Frame, if set, is a page of WeChat's shown in a frame.
	Frame, FrameTitle string
}

type pageForm struct {
	Action, Label string
	Hidden        map[string]string
}

// pageStyle and copyScript are the pages' only style and script, inline
// and allowed by their hashes in the Content-Security-Policy.
const pageStyle = `body{font-family:-apple-system,"PingFang SC","Microsoft YaHei",system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1.2rem;color:#222;line-height:1.6}
h1{font-size:1.3rem}a.btn,button{display:inline-block;padding:.6rem 1.2rem;margin:.3rem .3rem 0 0;border-radius:6px;border:1px solid #07c160;color:#07c160;background:#fff;text-decoration:none;font-size:1rem}
a.primary,button.primary{background:#07c160;color:#fff}small{color:#888}[hidden]{display:none!important}
img.qr{display:block;max-width:100%;image-rendering:pixelated;margin:1rem 0}iframe{display:block;border:0;margin:1rem 0}
code.link{display:block;padding:.5rem;background:#f4f4f4;border-radius:4px;word-break:break-all;user-select:all;-webkit-user-select:all}`

const copyScript = `(function(){var b=document.getElementById("copy"),l=document.getElementById("link");if(!b||!l)return;
function done(){b.textContent=b.getAttribute("data-done")}
function select(){var r=document.createRange();r.selectNodeContents(l);var s=window.getSelection();s.removeAllRanges();s.addRange(r);try{if(document.execCommand("copy"))done()}catch(e){}}
b.hidden=false;b.addEventListener("click",function(){if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(l.textContent).then(done,select)}else{select()}})})();`

// pageCSP is the pages' Content-Security-Policy: nothing loads but the
// inline style and script above and data: images, nothing frames them,
// and a page that frames WeChat's QR page allows that origin in frames
// (Server.framingCSP).
var pageCSP = "default-src 'none'; style-src " + cspHash(pageStyle) + "; script-src " + cspHash(copyScript) +
	"; img-src data:; base-uri 'none'; frame-ancestors 'none'"

func cspHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="{{if eq .Lang "en"}}en{{else}}zh-CN{{end}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}}</title>
<style>` + pageStyle + `</style></head>
<body><h1>{{.Title}}</h1><p>{{.Body}}</p>
{{- if .Frame}}
<iframe src="{{.Frame}}" title="{{.FrameTitle}}" width="300" height="400" sandbox="allow-scripts allow-same-origin allow-forms allow-top-navigation"></iframe>{{end}}
{{- if .QR}}
<img class="qr" src="{{.QR}}" alt="{{.QRAlt}}">{{end}}
{{- if .Link}}
<code class="link" id="link">{{.Link}}</code><button type="button" id="copy" data-done="{{.CopiedLabel}}" hidden>{{.CopyLabel}}</button>{{end}}
{{if .Form}}<form method="post" action="{{.Form.Action}}">{{range $k, $v := .Form.Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}<button class="primary" type="submit">{{.Form.Label}}</button></form>{{end}}
{{range .Links}}<a class="btn{{if .Primary}} primary{{end}}" href="{{.URL}}">{{.Label}}</a> {{end}}
{{if .Footer}}<p><small>{{.Footer}}</small></p>{{end}}
{{if .RequestID}}<p><small>ID: {{.RequestID}}</small></p>{{end}}
{{- if .Link}}
<script>` + copyScript + `</script>{{end}}
</body></html>`))

func (s *Server) page(c *fiber.Ctx, page string) pageData {
	l := lang(c)
	m, ok := messages[page]
	if !ok {
		m = messages["internal"]
	}
	d := pageData{Lang: l, Title: m.zhTitle, Body: m.zhBody}
	if l == "en" {
		d.Title, d.Body = m.enTitle, m.enBody
	}
	return d
}

// withLink shows link on d, to select or copy.
func (s *Server) withLink(c *fiber.Ctx, d *pageData, link string) {
	d.Link, d.CopyLabel, d.CopiedLabel = link, label(c, "copy"), label(c, "copied")
}

func label(c *fiber.Ctx, key string) string {
	if lang(c) == "en" {
		return linkLabels[key][1]
	}
	return linkLabels[key][0]
}

func (s *Server) render(c *fiber.Ctx, d pageData) error {
	noStore(c)
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	contentLang := "zh-CN"
	if d.Lang == "en" {
		contentLang = "en"
	}
	c.Set(fiber.HeaderContentLanguage, contentLang)
	csp := pageCSP
	if d.Frame != "" {
		csp = s.framingCSP
	}
	c.Set(fiber.HeaderContentSecurityPolicy, csp)
	c.Vary(fiber.HeaderAcceptLanguage)
	return pageTmpl.Execute(c.Response().BodyWriter(), d)
}

// renderMessage shows a message page with an optional retry link.
func (s *Server) renderMessage(c *fiber.Ctx, page, link, action, rid string) error {
	d := s.page(c, page)
	d.RequestID = rid
	if link != "" {
		d.Links = append(d.Links, pageLink{URL: link, Label: label(c, action), Primary: true})
	}
	return s.render(c, d)
}

// noStore marks wxgate's own answers uncacheable and keeps their URLs (which
// may carry a code) out of Referer headers.
func noStore(c *fiber.Ctx) {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
}
