package policies_test

import (
	"fmt"
	"net/netip"

	"github.com/wxgate/wxgate/policies"
)

func Example() {
	engine, err := policies.New([]policies.Rule{
		{Name: "public", Path: "/public/**", Action: policies.Public},
		{Name: "profile", Path: "/profile/**", Scope: policies.Userinfo},
		{Name: "admin", Path: "/admin/**", Action: policies.Deny},
	}, policies.Config{Upstream: "app"})
	if err != nil {
		panic(err)
	}
	base := &policies.Identity{OpenID: "oAlice", Scope: policies.Base}
	for _, raw := range []string{"/public/a", "/public/..%2fprofile/me", "/Admin;v=1/users", "/orders", "/../etc/passwd"} {
		p, err := policies.ParsePath(raw)
		if err != nil {
			fmt.Println(raw, "->", err)
			continue
		}
		d := engine.Decide("GET", "app.example.com", p, netip.Addr{}, base)
		fmt.Printf("%s -> %s by %s on the %s reading %s; forward %s\n", raw, d.Outcome, d.Rule.Name, d.Reading, d.Path, p.Forward)
	}
	// Output:
	// /public/a -> allow by public on the normalized reading /public/a; forward /public/a
	// /public/..%2fprofile/me -> need_scope by profile on the normalized reading /profile/me; forward /public/..%2Fprofile/me
	// /Admin;v=1/users -> forbidden by admin on the params-removed, case-folded reading /Admin/users; forward /Admin;v=1/users
	// /orders -> allow by default on the normalized reading /orders; forward /orders
	// /../etc/passwd -> policies: path cannot be normalized: dot segments climb above the root
}

// ExampleEngine_Route decides without identity first and looks at the
// caller only when that answer is NeedLogin: public and deny routes never
// need one.
func ExampleEngine_Route() {
	engine, err := policies.New([]policies.Rule{
		{Name: "public", Path: "/public/**", Action: policies.Public},
		{Name: "admin", Path: "/admin/**", Action: policies.Deny},
		{Name: "profile", Path: "/profile/**", Scope: policies.Userinfo},
	}, policies.Config{Upstream: "app"})
	if err != nil {
		panic(err)
	}
	lookups := 0
	caller := func() *policies.Identity {
		lookups++ // a session store read in a gateway
		return &policies.Identity{OpenID: "oAlice", Scope: policies.Base}
	}
	for _, raw := range []string{"/public/a", "/admin/users", "/profile/me", "/orders"} {
		p, _ := policies.ParsePath(raw)
		route := engine.Route("GET", "app.example.com", p, netip.Addr{})
		d := route.Decide(nil)
		if d.Outcome == policies.NeedLogin {
			d = route.Decide(caller())
		}
		fmt.Printf("%s -> %s by %s\n", raw, d.Outcome, d.Rule.Name)
	}
	fmt.Println("caller looked up", lookups, "times")
	// Output:
	// /public/a -> allow by public
	// /admin/users -> forbidden by admin
	// /profile/me -> need_scope by profile
	// /orders -> allow by default
	// caller looked up 2 times
}
