package proxy_test

import (
	"fmt"
	"net/http"
	"testing"
)

// TestStartTotalNotExhaustedByOneIPv6Customer: behind a trusted load
// balancer, one customer with an IPv6 /48 (a free tunnel broker hands one
// out; many hosts give a /56) spreads its /start requests over many /64s.
// Each /64 stays under max_pending_per_client, yet together they fill
// max_pending and every other client's login is refused with 429 for the
// pending lifetime (10 minutes, renewed as long as the flood goes on).
// With the defaults (300 per client, 100000 in total) 334 /64s suffice;
// here the bounds are scaled down to 20 and 1000 (50 /64s).
func TestStartTotalNotExhaustedByOneIPv6Customer(t *testing.T) {
	t.Setenv("WXGATE_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
	e := newEnvOpts(t, envOptions{maxPending: 1000, maxPendingPerClient: 20})
	flood := e.browser(weChatUA)
	admitted := 0
	for n := 0; n < 60; n++ {
		xff := fmt.Sprintf("2001:db8:1:%x::1", n) // one /48, another /64 each time
		for i := 0; i < 20; i++ {
			resp, _ := flood.get("/_wxgate/start?rd=/", map[string]string{"X-Forwarded-For": xff})
			if resp.StatusCode == http.StatusFound {
				admitted++
			}
		}
	}
	t.Logf("one /48 got %d pending logins admitted", admitted)
	victim := e.browser(weChatUA)
	resp, _ := victim.get("/_wxgate/start?rd=/", map[string]string{"X-Forwarded-For": "198.51.100.7"})
	if resp.StatusCode == http.StatusTooManyRequests {
		t.Errorf("an unrelated client's login start: 429: one IPv6 /48 exhausted max_pending")
	}
}
