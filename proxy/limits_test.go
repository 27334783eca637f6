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
// the per-client bound, takes at most a tenth of the total, so other
// networks can still start logins; a carrier /24 with many clients gets
// the same share.
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
	if admitted != 100 {
		t.Errorf("one /48 admitted %d starts, want 100 (a tenth of the total)", admitted)
	}
	if ok, why := l.allow(netip.MustParseAddr("2001:db8:1:ffff::1")); ok || why != "network" {
		t.Errorf("the /48's next start = %v %q, want refused for its network", ok, why)
	}
	for i := 0; i < 20; i++ {
		if ok, why := l.allow(netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::1", 100+i))); !ok {
			t.Fatalf("another /48's start %d refused (%s)", i, why)
		}
	}
	// Five clients of one /24 use its share; a sixth is refused, another
	// /24 is not.
	for n := 0; n < 5; n++ {
		for range 20 {
			if ok, why := l.allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)})); !ok {
				t.Fatalf("client %d of one /24 refused (%s)", n, why)
			}
		}
	}
	if ok, why := l.allow(netip.MustParseAddr("198.51.100.99")); ok || why != "network" {
		t.Errorf("the /24's 101st start = %v %q, want refused for its network", ok, why)
	}
	if ok, why := l.allow(netip.MustParseAddr("198.51.101.1")); !ok {
		t.Errorf("another /24's start refused (%s)", why)
	}
}

// TestNetworkShareNotTriggeredByOneNetwork: with the defaults (300 per
// client, 100000 in total), one IPv6 /48 spread over 200 /64s and four
// addresses inside a carrier's CGNAT /24 must not lock the carrier's other
// users out. (An earlier design capped networks only once half the total
// was in flight, which let one /48 create that pressure and so cap every
// other network at 1%.)
func TestNetworkShareNotTriggeredByOneNetwork(t *testing.T) {
	now := time.Unix(1795433000, 0)
	l := newStartLimiter(300, 100_000, 10*time.Minute, func() time.Time { return now })
	flood := 0
	for n := 0; n < 200; n++ {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", n)) // one /48
		for range 300 {
			if ok, _ := l.allow(a); ok {
				flood++
			}
		}
	}
	inside := 0
	for i := 1; i <= 4; i++ { // four addresses in the carrier's /24
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		for range 300 {
			if ok, _ := l.allow(a); ok {
				inside++
			}
		}
	}
	t.Logf("the /48 holds %d pending logins, four addresses of 198.51.100.0/24 hold %d: %d of 100000 in flight", flood, inside, flood+inside)
	for _, user := range []string{"198.51.100.77", "198.51.100.200"} {
		if ok, why := l.allow(netip.MustParseAddr(user)); !ok {
			t.Errorf("a user of the carrier's /24 (%s), never seen before, is refused (%s) with %d of 100000 logins in flight",
				user, why, flood+inside)
		}
	}
}

func TestReleaseNeverGoesBelowZero(t *testing.T) {
	now := time.Unix(1795433000, 0)
	l := newStartLimiter(2, 100, 10*time.Minute, func() time.Time { return now })
	a := netip.MustParseAddr("198.51.100.7")
	// Callbacks this replica never admitted (another replica's starts).
	for range 5 {
		l.release(a)
	}
	for i := range 3 {
		if ok, _ := l.allow(a); ok != (i < 2) {
			t.Fatalf("start %d after foreign releases: allowed %v", i+1, ok)
		}
	}
}
