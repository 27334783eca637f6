package proxy

import (
	"strings"

	"github.com/wxgate/wxgate/policies"
)

// Scope words, all of them and their translations in one file (issue 10).
// Three vocabularies meet here:
//   - a route asks for a route scope, base or userinfo (policies.Rule.Scope),
//     which is also the scope parameter of /_wxgate/start;
//   - the official account asks WeChat for an snsapi scope (the authorize
//     URL's scope, kept with the pending login);
//   - a login records how it was obtained (session.Identity.Scope, sent as
//     X-WeChat-Scope): an snsapi scope, or miniprogram or app for the API
//     logins.

// Route scopes.
const (
	routeBase     = policies.Base
	routeUserinfo = policies.Userinfo
)

// Login scopes: WeChat's snsapi scopes, and the API logins'.
const (
	scopeBase        = "snsapi_base"     // official account, silent: the openid only
	scopeUserinfo    = "snsapi_userinfo" // official account, with the profile
	scopeLogin       = "snsapi_login"    // website QR login, with the profile
	scopeMiniProgram = "miniprogram"     // mini-program wx.login: no profile
	scopeApp         = "app"             // mobile app SendAuth
)

// authorizeScope is the snsapi scope the official account asks WeChat for
// to satisfy a route scope: base unless the route asks for userinfo.
func authorizeScope(route string) string {
	if route == routeUserinfo {
		return scopeUserinfo
	}
	return scopeBase
}

// routeScope is the route scope a login of scope login satisfies:
// userinfo for the logins that carry the profile (snsapi_userinfo,
// snsapi_login, app), base for the others (snsapi_base, miniprogram).
func routeScope(login string) string {
	switch login {
	case scopeUserinfo, scopeLogin, scopeApp:
		return routeUserinfo
	}
	return routeBase
}

// grantsUserinfo reports whether the scope WeChat granted with a user
// token (one or more snsapi scopes) includes snsapi_userinfo.
func grantsUserinfo(granted string) bool { return strings.Contains(granted, scopeUserinfo) }
