package proxy

import (
	"net/netip"
	"testing"
	"time"
)

func TestStartLimiter(t *testing.T) {
	now := time.Unix(1795433000, 0)
	l := newStartLimiter(3, 5, 10*time.Minute, func() time.Time { return now })
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
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
	admit(netip.MustParseAddr("203.0.113.1"), false, "total") // 5 in flight
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
