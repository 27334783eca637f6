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
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, ok := loadAndValidate(*path, stdout, nil)
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
	engine, err := policies.New(cfg.Routes, cfg.Policy)
	if err != nil {
		printLines(stdout, err)
		return 1
	}
	p, err := policies.ParsePath(u.EscapedPath())
	if err != nil {
		fmt.Fprintf(stdout, "%s %s: refused with 400: the path cannot be normalized\n", method, u)
		return 0
	}
	d := engine.Decide(strings.ToUpper(method), u.Host, p, netip.Addr{}, nil)
	fmt.Fprintf(stdout, "%s %s (normalized path %s)\n  decided by %s\n", strings.ToUpper(method), u, p.Clean, d.Rule.Explain())
	return 0
}
