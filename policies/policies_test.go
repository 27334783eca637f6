package policies

import (
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

// TestProbesMustBeForwardedPaths: a probe that no request can match (a
// glob, a query, a spelling the gateway rewrites before comparing) is a
// config error, not a favicon that silently starts logins.
func TestProbesMustBeForwardedPaths(t *testing.T) {
	for _, p := range []string{"favicon.ico", "/static/*.png", "/**", "/robots.txt?x=1", "/a#b", "/a/../favicon.ico", "//favicon.ico", "/%7Euser", "/favicon.ico/.", "/a\\b"} {
		if _, err := New(nil, Config{Default: Login, Scope: Base, Probes: []string{p}}); err == nil || !strings.Contains(err.Error(), "policy.probes[0]") {
			t.Errorf("probe %q: %v, want a policy.probes[0] error", p, err)
		}
	}
	for _, p := range []string{"/favicon.ico", "/apple-touch-icon.png", "/.well-known/security.txt", "/a%2Fb", "/a;b", "/dir/"} {
		if _, err := New(nil, Config{Default: Login, Scope: Base, Probes: []string{p}}); err != nil {
			t.Errorf("probe %q: %v", p, err)
		}
	}
}
