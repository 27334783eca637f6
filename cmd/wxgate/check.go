package main

import (
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"

	"github.com/wxgate/wxgate/policies"
)

// check validates a config: exit 0, or one line per problem and exit 1.
// With --explain it also names the route that decides a request and why.
func check(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := fs.String("config", "gateway.toml", "configuration file")
	explain := fs.String("explain", "", `a request to explain, "METHOD URL", e.g. "GET https://app.example.com/admin/x"`)
	ip := fs.String("ip", "", "with --explain: the client's address, for routes with networks")
	openid := fs.String("openid", "", "with --explain: also decide for a caller with this openid")
	unionid := fs.String("unionid", "", "with --explain: also decide for a caller with this unionid")
	scope := fs.String("scope", policies.Base, "with --openid or --unionid: the caller's scope, base or userinfo")
	strict := fs.Bool("strict", false, "a secret whose environment variable is unset is a problem, as for serve, not a warning")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	var client netip.Addr
	if *ip != "" {
		a, err := netip.ParseAddr(*ip)
		if err != nil {
			fmt.Fprintf(stderr, "--ip: %q is not an IP address\n", *ip)
			return 2
		}
		client = a.Unmap()
	}
	if *scope != policies.Base && *scope != policies.Userinfo {
		fmt.Fprintf(stderr, "--scope: %q is not base or userinfo\n", *scope)
		return 2
	}
	cfg, ok := loadAndValidate(*path, stdout, nil, !*strict)
	if !ok {
		return 1
	}
	if *explain == "" {
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	}
	method, rawURL, found := strings.Cut(strings.TrimSpace(*explain), " ")
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if !found || err != nil || u.Host == "" {
		fmt.Fprintf(stderr, "--explain: want \"METHOD URL\" with an absolute URL, got %q\n", *explain)
		return 2
	}
	engine := cfg.Engine()
	target := u.EscapedPath()
	if target == "" {
		// What a client sends for a URL without a path.
		target = "/"
	}
	p, err := policies.ParsePath(target)
	if err != nil {
		fmt.Fprintf(stdout, "%s %s: refused with 400: %v\n", method, u, err)
		return 0
	}
	// The strictest reading decides, and which one depends on the caller:
	// show a first visit, then a login that satisfies no allow list and has
	// the smallest scope, when another route decides for it.
	m := strings.ToUpper(method)
	anon := engine.Decide(m, u.Host, p, client, nil)
	from := ""
	if client.IsValid() {
		from = " from " + client.String()
	}
	fmt.Fprintf(stdout, "%s %s%s (normalized path %s, forwarded as %s)\n  decided by %s\n", m, u, from, p.Clean, p.Forward, anon.Rule.Explain())
	explainReading(stdout, anon)
	if known := engine.Decide(m, u.Host, p, client, &policies.Identity{Scope: policies.Base}); known.Rule != anon.Rule {
		fmt.Fprintf(stdout, "  once logged in (base scope, on no allow list): %s by %s\n", known.Outcome, known.Rule.Explain())
		explainReading(stdout, known)
	}
	if *openid != "" || *unionid != "" {
		who := &policies.Identity{OpenID: *openid, UnionID: *unionid, Scope: *scope}
		d := engine.Decide(m, u.Host, p, client, who)
		fmt.Fprintf(stdout, "  for openid %q, unionid %q (%s scope): %s by %s\n", *openid, *unionid, *scope, d.Outcome, d.Rule.Explain())
		explainReading(stdout, d)
	}
	return 0
}

// explainReading names the reading of the path that decided, unless it is
// the normalized path already shown.
func explainReading(w io.Writer, d policies.Decision) {
	if d.Reading != policies.PrimaryReading {
		fmt.Fprintf(w, "    on the %s reading of the path, %s, as some upstreams read it\n", d.Reading, d.Path)
	}
}
