package proxy

import "testing"

func TestScopeTranslations(t *testing.T) {
	t.Parallel()
	// What each login satisfies: the routes' scope, as policies judges it.
	for login, want := range map[string]string{
		scopeBase:        routeBase,
		scopeUserinfo:    routeUserinfo,
		scopeLogin:       routeUserinfo,
		scopeMiniProgram: routeBase,
		scopeApp:         routeUserinfo,
		"":               routeBase,
		"snsapi_unknown": routeBase,
	} {
		if got := routeScope(login); got != want {
			t.Errorf("routeScope(%q) = %q, want %q", login, got, want)
		}
	}
	// What the official account asks WeChat for, and that the login it
	// gives satisfies the route that asked.
	for route, want := range map[string]string{routeBase: scopeBase, routeUserinfo: scopeUserinfo, "": scopeBase, "admin": scopeBase} {
		got := authorizeScope(route)
		if got != want {
			t.Errorf("authorizeScope(%q) = %q, want %q", route, got, want)
		}
		if route == routeBase || route == routeUserinfo {
			if back := routeScope(got); back != route {
				t.Errorf("routeScope(authorizeScope(%q)) = %q, want %q", route, back, route)
			}
		}
	}
	for granted, want := range map[string]bool{"snsapi_base": false, "snsapi_userinfo": true, "snsapi_base,snsapi_userinfo": true, "": false} {
		if got := grantsUserinfo(granted); got != want {
			t.Errorf("grantsUserinfo(%q) = %v, want %v", granted, got, want)
		}
	}
}
