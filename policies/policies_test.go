package policies

import (
	"net/netip"
	"strings"
	"testing"
)

func testEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New([]Rule{
		{Name: "health", Path: "/healthz", Action: Public},
		{Name: "admin", Host: "app.example.com", Path: "/admin/**", Methods: []string{"get", "POST"}, Action: Login, Scope: Userinfo, AllowUnionIDs: []string{"uBoss"}},
		{Name: "internal", Path: "/internal/**", Networks: []string{"10.0.0.0/8"}, Action: Public},
		{Name: "internal-deny", Path: "/internal/**", Action: Deny},
		{Name: "sub", Host: ".example.org", Path: "/x/*.json", Action: Public},
		{Name: "re", PathRegex: `/v[0-9]+/items`, Action: Login, API: true},
		{Name: "profile", Path: "/profile/**", Scope: Userinfo},
	}, Config{Upstream: "app"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDecide(t *testing.T) {
	e := testEngine(t)
	boss := &Identity{OpenID: "o1", UnionID: "uBoss", Scope: Userinfo}
	bossBase := &Identity{OpenID: "o1", UnionID: "uBoss", Scope: Base}
	other := &Identity{OpenID: "o2", UnionID: "uOther", Scope: Userinfo}
	tests := []struct {
		name, method, host, path, ip string
		id                           *Identity
		rule                         string
		want                         Outcome
	}{
		{"public", "GET", "any", "/healthz", "", nil, "health", Allow},
		{"admin no id", "GET", "app.example.com", "/admin/x", "", nil, "admin", NeedLogin},
		{"admin dir itself", "GET", "app.example.com:8080", "/admin", "", nil, "admin", NeedLogin},
		{"host with trailing dot", "GET", "app.example.com.", "/admin/x", "", nil, "admin", NeedLogin},
		{"host with trailing dot and port", "GET", "App.Example.com.:8443", "/admin/x", "", nil, "admin", NeedLogin},
		{"host with two trailing dots", "GET", "app.example.com..", "/admin/x", "", nil, "default", NeedLogin},
		{"admin boss", "POST", "APP.example.com", "/admin/a/b", "", boss, "admin", Allow},
		{"admin base scope", "GET", "app.example.com", "/admin/x", "", bossBase, "admin", NeedScope},
		{"admin not listed", "GET", "app.example.com", "/admin/x", "", other, "admin", Forbidden},
		{"admin other method", "DELETE", "app.example.com", "/admin/x", "", nil, "default", NeedLogin},
		{"admin other host", "GET", "other.example.com", "/admin/x", "", boss, "default", Allow},
		{"admin prefix is not a dir", "GET", "app.example.com", "/administrator", "", nil, "default", NeedLogin},
		{"internal from inside", "GET", "h", "/internal/m", "10.1.2.3", nil, "internal", Allow},
		{"internal v4-mapped", "GET", "h", "/internal/m", "::ffff:10.1.2.3", nil, "internal", Allow},
		{"internal from outside", "GET", "h", "/internal/m", "192.0.2.1", other, "internal-deny", Forbidden},
		{"subdomain", "GET", "a.example.org", "/x/d.json", "", nil, "sub", Allow},
		{"subdomain apex excluded", "GET", "example.org", "/x/d.json", "", nil, "default", NeedLogin},
		{"star stays in segment", "GET", "a.example.org", "/x/y/d.json", "", nil, "default", NeedLogin},
		{"regex anchored", "GET", "h", "/v2/items", "", nil, "re", NeedLogin},
		{"regex no partial", "GET", "h", "/v2/items/1", "", nil, "default", NeedLogin},
		{"default scope base", "GET", "h", "/", "", bossBase, "default", Allow},
		{"profile needs userinfo", "GET", "h", "/profile/me", "", bossBase, "profile", NeedScope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ip netip.Addr
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			p, err := ParsePath(tc.path)
			if err != nil {
				t.Fatalf("ParsePath(%q): %v", tc.path, err)
			}
			d := e.Decide(tc.method, tc.host, p, ip, tc.id)
			if d.Rule.Name != tc.rule || d.Outcome != tc.want {
				t.Errorf("Decide(%s %s%s) = %s by %q, want %s by %q", tc.method, tc.host, tc.path, d.Outcome, d.Rule.Name, tc.want, tc.rule)
			}
			if d.Rule.Upstream != "app" {
				t.Errorf("upstream = %q, want the [policy] default", d.Rule.Upstream)
			}
		})
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New([]Rule{
		{Name: "a", Action: "allow"},
		{Name: "a", Path: "admin"},
		{Path: "/x", PathRegex: "/y"},
		{Name: "b", PathRegex: "(", Networks: []string{"10.0.0.0/33"}},
		{Name: "c", Action: Public, Scope: Userinfo},
	}, Config{Default: "maybe"})
	if err == nil {
		t.Fatal("New accepted bad rules")
	}
	want := []string{
		`policy.default: "maybe"`,
		`route[0] (a).action: "allow"`,
		`route[1] (a).name: duplicate`,
		`route[1] (a).path: "admin" must start with /`,
		`route[2].name: required`,
		`route[2].path_regex: set path or path_regex`,
		`route[3] (b).path_regex:`,
		`route[3] (b).networks: "10.0.0.0/33"`,
		`route[4] (c).scope: only login routes`,
	}
	lines := strings.Split(err.Error(), "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no line starting %q in:\n%s", w, err)
		}
	}
}
