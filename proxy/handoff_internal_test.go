package proxy

import (
	"slices"
	"strings"
	"testing"
)

// TestCookieNames: a session cookie with a Domain cannot be __Host- (a
// browser would drop it), and every name wxgate may use is one the proxy
// strips before the upstream.
func TestCookieNames(t *testing.T) {
	for _, secure := range []bool{false, true} {
		for _, shared := range []bool{false, true} {
			n := newCookieNames(secure, shared)
			if shared && (n.shared == "" || strings.HasPrefix(n.shared, "__Host-")) || !shared && n.shared != "" {
				t.Errorf("secure %v, shared %v: shared session cookie %q (it carries a Domain)", secure, shared, n.shared)
			}
			// Off the shared domain, on https, nothing but a host-only
			// cookie may log the browser in.
			if secure && (!strings.HasPrefix(n.session, "__Host-") || !strings.HasPrefix(n.binding, "__Host-")) || secure != n.secure {
				t.Errorf("secure %v, shared %v: %+v", secure, shared, n)
			}
			for _, name := range []string{n.session, n.shared, n.binding} {
				if name == "" {
					continue
				}
				if !slices.Contains(ownCookies, name) {
					t.Errorf("%q is not stripped before the upstream", name)
				}
			}
		}
	}
}
