package proxy

import (
	"net/netip"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// cookieNames are wxgate's cookies. On https they take the __Host- prefix,
// which browsers only accept Secure, host-only and with Path=/; the session
// cookie on the hosts [session] cookie_domain covers, which carries that
// Domain, takes __Secure- instead, which only asks for Secure. The other
// hosts keep __Host-: a __Secure- cookie there could be set by any sibling
// host for their common parent.
type cookieNames struct {
	session string // the session ID
	// shared is the session cookie's name on the hosts cookie_domain
	// covers; empty without cookie_domain.
	shared  string
	binding string // binds a pending login's state to this browser
	secure  bool
}

func newCookieNames(secure, shared bool) cookieNames {
	n := cookieNames{session: "wxgate_session", binding: "wxgate_login"}
	if secure {
		n = cookieNames{session: "__Host-wxgate_session", binding: "__Host-wxgate_login", secure: true}
	}
	if shared {
		n.shared = strings.Replace(n.session, "__Host-", "__Secure-", 1)
	}
	return n
}

// ownCookies are removed from the Cookie header whatever the scheme, so an
// upstream never sees a session ID.
var ownCookies = []string{"wxgate_session", "__Host-wxgate_session", "__Secure-wxgate_session", "wxgate_login", "__Host-wxgate_login"}

// hopHeaders are hop-by-hop headers, removed before forwarding in either
// direction (RFC 9110 7.6.1; the list of net/http/httputil).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Headers wxgate sets. Incoming copies are removed before forwarding.
const (
	hOpenID      = "X-WeChat-OpenID"
	hUnionID     = "X-WeChat-UnionID"
	hAppID       = "X-WeChat-AppID"
	hScope       = "X-WeChat-Scope"
	hNickname    = "X-WeChat-Nickname"
	hAvatar      = "X-WeChat-Avatar"
	hPhone       = "X-WeChat-Phone"
	hAccessToken = "X-WeChat-Access-Token"
	hIdentity    = "X-WeChat-Identity"
	hUser        = "X-Forwarded-User"
)

// spoofable reports whether a client-sent header named name must be removed
// because wxgate sets it (or a proxy would). Names compare case-insensitively
// with "-", "_", "." and other punctuation alike: some servers (nginx with
// underscores_in_headers, CGI, WSGI, PHP) treat X_WeChat_OpenID and
// X.WeChat.OpenID as X-WeChat-OpenID.
func spoofable(name []byte, trusted bool) bool {
	// Fold into a stack buffer: this runs for every header of every request.
	var buf [32]byte
	if len(name) > len(buf) {
		return len(name) >= len(wechatPrefix) && foldEqual(name[:len(wechatPrefix)], wechatPrefix) ||
			foldEqual(name[:len(cloudRunPrefix)], cloudRunPrefix)
	}
	n := buf[:len(name)]
	for i, c := range name {
		n[i] = fold(c)
	}
	if len(n) >= len(wechatPrefix) && string(n[:len(wechatPrefix)]) == wechatPrefix ||
		len(n) >= len(cloudRunPrefix) && string(n[:len(cloudRunPrefix)]) == cloudRunPrefix {
		return true
	}
	switch string(n) {
	case "x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username",
		"x-auth-request-user", "x-auth-request-email", "x-remote-user", "remote-user",
		// Method overrides: Rails, Laravel and Symfony run the named
		// method's handler for a POST, which the policy judged as a POST.
		"x-http-method-override", "x-http-method", "x-method-override":
		return true
	case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
		"x-forwarded-method", "x-forwarded-uri", "x-original-url", "forwarded", "x-request-id",
		// The client-IP headers of CDNs and load balancers: upstreams log,
		// rate-limit and allow-list on them. Only a trusted proxy may send
		// them; wxgate's own word is X-Forwarded-For.
		"x-real-ip", "true-client-ip", "cf-connecting-ip", "x-client-ip", "x-cluster-client-ip",
		"fastly-client-ip", "x-original-forwarded-for", "x-originating-ip", "x-remote-ip",
		"x-remote-addr", "client-ip", "x-forwarded":
		return !trusted
	}
	return false
}

const wechatPrefix = "x-wechat-"

// cloudRunPrefix starts the identity headers WeChat Cloud Run (微信云托管)
// injects (X-WX-OPENID, X-WX-UNIONID, X-WX-APPID, X-WX-SOURCE, ...): apps
// moved from Cloud Run behind wxgate still trust them.
const cloudRunPrefix = "x-wx-"

// fold lowercases ASCII and maps every other character that is not a letter
// or digit to "-": CGI and PHP turn "-" into "_", and Apache's and PHP's
// header-to-variable conversion turns "." and other punctuation into "_"
// as well, so X.WeChat.OpenID becomes HTTP_X_WECHAT_OPENID.
func fold(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return c
	}
	return '-'
}

func foldEqual(b []byte, s string) bool {
	for i := range b {
		if fold(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// removeHopByHop deletes the headers named in Connection, then the fixed
// hop-by-hop list (the order of httputil.ReverseProxy). Connection cannot
// name the headers that frame and route the message: deleting
// Content-Length or Host would break the request instead of shortening it.
func removeHopByHop(h interface {
	Peek(string) []byte
	Del(string)
}) {
	// No Connection, or the usual keep-alive (in hopHeaders), cost nothing:
	// this runs twice for every proxied request.
	if conn := h.Peek("Connection"); len(conn) > 0 && !equalFold(conn, "keep-alive") {
		for _, f := range strings.Split(string(conn), ",") {
			if f = strings.TrimSpace(f); f != "" && !strings.EqualFold(f, "Content-Length") && !strings.EqualFold(f, "Host") {
				h.Del(f)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// sanitizeRequest prepares an incoming request's headers for the upstream:
// hop-by-hop headers, spoofed identity headers and wxgate's cookies go.
func sanitizeRequest(h *fasthttp.RequestHeader, trusted bool) {
	removeHopByHop(h)
	var drop [][]byte
	h.VisitAll(func(k, _ []byte) {
		if spoofable(k, trusted) {
			drop = append(drop, append([]byte(nil), k...))
		}
	})
	for _, k := range drop {
		h.DelBytes(k)
	}
	for _, c := range ownCookies {
		h.DelCookie(c)
	}
}

// setForwarded sets X-Forwarded-For/Proto/Host. From a trusted proxy the
// chain is extended and its proto and host kept; otherwise they are the
// connection's own.
func setForwarded(h *fasthttp.RequestHeader, client netip.Addr, proto, host string, trusted bool) {
	// Built on the stack: this runs for every proxied request.
	var buf [64]byte
	xff := buf[:0]
	if prior := h.Peek("X-Forwarded-For"); trusted && len(prior) > 0 {
		xff = append(append(xff, prior...), ", "...)
	}
	h.SetBytesV("X-Forwarded-For", client.AppendTo(xff))
	if !trusted || len(h.Peek("X-Forwarded-Proto")) == 0 {
		h.Set("X-Forwarded-Proto", proto)
	}
	if !trusted || len(h.Peek("X-Forwarded-Host")) == 0 {
		h.Set("X-Forwarded-Host", host)
	}
}

// identityOptions are the route's choices of what to pass.
type identityOptions struct {
	phone, wechatToken bool
}

// headerSetter is a request's or a response's header: forward sets the
// identity on the request to the upstream, forwardAuth on its answer to
// the proxy that asked.
type headerSetter interface{ Set(key, value string) }

// setIdentity sets the identity headers of DESIGN.md for a caller, with
// its signed assertion.
func setIdentity(h headerSetter, who *caller, assertion string, opt identityOptions) {
	id := who.id
	setIf(h, hOpenID, id.OpenID)
	setIf(h, hUnionID, id.UnionID)
	setIf(h, hAppID, id.AppID)
	setIf(h, hScope, id.Scope)
	if id.Nickname != "" {
		h.Set(hNickname, url.PathEscape(id.Nickname))
	}
	setIf(h, hAvatar, id.Avatar)
	setIf(h, hUser, id.User())
	if opt.phone {
		setIf(h, hPhone, id.Phone)
	}
	setIf(h, hIdentity, assertion)
	if opt.wechatToken && who.tokens != nil {
		setIf(h, hAccessToken, who.tokens.AccessToken.Reveal())
	}
}

// setIf sets a header only when v is non-empty and safe in a header: a
// value from WeChat with a control character is dropped, not forwarded.
func setIf(h headerSetter, name, v string) {
	if v == "" {
		return
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return
		}
	}
	h.Set(name, v)
}
