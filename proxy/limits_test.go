package proxy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestStartLimiter(t *testing.T) {
	now := time.Unix(1795433000, 0)
	l := newStartLimiter(3, 5, 10*time.Minute, func() time.Time { return now })
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.8")
	admit := func(addr netip.Addr, want bool, wantWhy string) {
		t.Helper()
		if ok, why := l.allow(addr); ok != want || why != wantWhy {
			t.Fatalf("allow(%s) at +%s = %v %q, want %v %q", addr, now.Sub(time.Unix(1795433000, 0)), ok, why, want, wantWhy)
		}
	}
	for range 3 {
		admit(a, true, "")
	}
	admit(a, false, "client") // a's fourth start within the lifetime
	admit(b, true, "")        // another client is not affected
	admit(b, true, "")
	admit(netip.MustParseAddr("192.0.2.1"), false, "total") // 5 in flight
	// Half a lifetime into the next window, half of the previous one is
	// still counted (the estimate assumes starts spread evenly): a is at
	// 1.5 of 3 and may start twice more.
	now = now.Add(15 * time.Minute)
	admit(a, true, "")
	admit(a, true, "")
	admit(a, false, "client")
	// Long idle: everything is forgotten.
	now = now.Add(time.Hour)
	admit(a, true, "")
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true}, // one /64: one host
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"198.51.100.7", "::ffff:198.51.100.7", true},
		{"198.51.100.7", "198.51.100.8", false},
	}
	for _, tc := range tests {
		if got := clientKey(netip.MustParseAddr(tc.a)) == clientKey(netip.MustParseAddr(tc.b)); got != tc.same {
			t.Errorf("clientKey(%s) == clientKey(%s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// TestStartLimiterNetworks: one IPv6 /48 spread over many /64s, each under
// the per-client bound, cannot take more than its share once half the
// total is in flight, so other networks can still start logins.
func TestStartLimiterNetworks(t *testing.T) {
	now := time.Unix(1795433000, 0)
	l := newStartLimiter(20, 1000, 10*time.Minute, func() time.Time { return now })
	admitted := 0
	for n := 0; n < 100; n++ {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", n)) // another /64 of one /48
		for range 20 {
			if ok, _ := l.allow(a); ok {
				admitted++
			}
		}
	}
	// Free up to half the total, then the /48's share (20 = max(20, 1000/100)).
	if admitted != 500 {
		t.Errorf("one /48 admitted %d starts, want 500 (half the total)", admitted)
	}
	if ok, why := l.allow(netip.MustParseAddr("2001:db8:1:ffff::1")); ok || why != "network" {
		t.Errorf("the /48's next start = %v %q, want refused for its network", ok, why)
	}
	for i := 0; i < 20; i++ {
		if ok, why := l.allow(netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::1", 100+i))); !ok {
			t.Fatalf("another /48's start %d refused (%s)", i, why)
		}
	}
	// Below half the total, networks are not limited: one carrier /24 may
	// hold many clients.
	l = newStartLimiter(20, 1000, 10*time.Minute, func() time.Time { return now })
	for n := 0; n < 20; n++ {
		for range 20 {
			if ok, why := l.allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)})); !ok {
				t.Fatalf("client %d of one /24 refused (%s) at %d in flight", n, why, n*20)
			}
		}
	}
}
