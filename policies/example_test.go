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
	}, policies.Config{Upstream: "app"})
	if err != nil {
		panic(err)
	}
	base := &policies.Identity{OpenID: "oAlice", Scope: policies.Base}
	for _, raw := range []string{"/public/a", "/public/..%2fprofile/me", "/orders"} {
		path, err := policies.NormalizePath(raw)
		if err != nil {
			fmt.Println(raw, "->", err)
			continue
		}
		d := engine.Decide("GET", "app.example.com", path, netip.Addr{}, base)
		fmt.Printf("%s -> %s: %s by %s\n", raw, path, d.Outcome, d.Rule.Name)
	}
	// Output:
	// /public/a -> /public/a: allow by public
	// /public/..%2fprofile/me -> /profile/me: need_scope by profile
	// /orders -> /orders: allow by default
}
