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
			if shared && strings.HasPrefix(n.session, "__Host-") {
				t.Errorf("secure %v, shared: session cookie %q cannot carry a Domain", secure, n.session)
			}
			if secure && !strings.HasPrefix(n.session, "__") || secure != n.secure {
				t.Errorf("secure %v, shared %v: %+v", secure, shared, n)
			}
			for _, name := range []string{n.session, n.binding} {
				if !slices.Contains(ownCookies, name) {
					t.Errorf("%q is not stripped before the upstream", name)
				}
			}
		}
	}
}
