package policies_test

import (
	"net/netip"
	"testing"

	"github.com/wxgate/wxgate/policies"
)

// TestHeadMeetsGetRules: a rule limited to GET judges HEAD too, because
// every common upstream (Go's ServeMux "GET /x" patterns, Spring's
// @GetMapping, Express's app.get, Rails) runs the GET handler for HEAD and
// answers its headers (Content-Length, Location, Set-Cookie, ETag).
func TestHeadMeetsGetRules(t *testing.T) {
	e, err := policies.New([]policies.Rule{
		{Name: "reports", Path: "/reports/**", Methods: []string{"GET"}, Action: policies.Deny},
	}, policies.Config{Upstream: "app", Default: policies.Public})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := policies.ParsePath("/reports/2026.csv")
	if d := e.Decide("HEAD", "app.example.com", p, netip.Addr{}, nil); d.Outcome != policies.Forbidden {
		t.Errorf("HEAD /reports/2026.csv: %s by %s, want forbidden (the upstream runs its GET handler)", d.Outcome, d.Rule.Name)
	}
}

// TestUnicodeCaseFoldReadings: the case-folded readings fold U+0131
// (dotless i) and U+0130 (dotted capital I) to 'i', as Java's
// String.equalsIgnoreCase does (Spring's AntPathMatcher when caseSensitive
// is false: toUpperCase('ı') == 'I', toLowerCase('İ') == 'i'), and Go's
// simple folding does not.
func TestUnicodeCaseFoldReadings(t *testing.T) {
	e, err := policies.New([]policies.Rule{
		{Name: "admin", Path: "/admin/**", Action: policies.Deny},
	}, policies.Config{Upstream: "app", Default: policies.Public})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"/adm%C4%B1n/users", "/ADM%C4%B0N/users"} {
		p, err := policies.ParsePath(raw)
		if err != nil {
			t.Fatal(err)
		}
		if d := e.Decide("GET", "app.example.com", p, netip.Addr{}, nil); d.Outcome != policies.Forbidden {
			t.Errorf("%s: %s by %s, want forbidden (Spring with case-insensitive matching reads /admin/users)", raw, d.Outcome, d.Rule.Name)
		}
	}
}
