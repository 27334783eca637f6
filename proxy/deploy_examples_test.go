package proxy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The Traefik and Envoy examples under deploy/ are not run here (neither is
// a Debian package); these tests hold them to the headers wxgate sets and
// the forms of the question wxgate reads, so that a header added to wxgate
// or a line dropped from an example fails.

// spellings are the ways a client may spell h that some app reads as h:
// any case, and "_" or "." for "-" (CGI, PHP).
func spellings(h string) []string {
	var out []string
	for _, sep := range []string{"-", "_", "."} {
		s := strings.ReplaceAll(h, "-", sep)
		out = append(out, s, strings.ToLower(s), strings.ToUpper(s))
	}
	return out
}

// yamlPath walks a decoded YAML document by map keys and list indexes.
func yamlPath(t *testing.T, doc any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := doc.(map[string]any)
			if !ok {
				t.Fatalf("%v: no map at %q", path, k)
			}
			doc = m[k]
		case int:
			l, ok := doc.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no list item %d", path, k)
			}
			doc = l[k]
		}
	}
	return doc
}

func readYAML(t *testing.T, file string) any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return doc
}

func TestTraefikExample(t *testing.T) {
	doc := readYAML(t, "../deploy/traefik/dynamic.yml")
	fa := yamlPath(t, doc, "http", "middlewares", "wxgate-auth", "forwardAuth").(map[string]any)
	if addr, _ := fa["address"].(string); !strings.HasSuffix(addr, "/_wxgate/auth?mode=redirect") {
		t.Errorf("forwardAuth address %q: want wxgate's /_wxgate/auth?mode=redirect", addr)
	}
	if fa["trustForwardHeader"] != false {
		t.Errorf("trustForwardHeader %v: a client's X-Forwarded-Uri would be the question", fa["trustForwardHeader"])
	}
	// Traefik removes every request header the regexp matches and sets it
	// from the answer; it matches with Go's regexp, as here.
	re, err := regexp.Compile(fa["authResponseHeadersRegex"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range identityHeaders {
		for _, s := range spellings(h) {
			if !re.MatchString(s) {
				t.Errorf("authResponseHeadersRegex misses %q: a client's copy reaches the app", s)
			}
		}
	}
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "Cookie", "Authorization", "X-Wechatty", "X-Forwarded-Username"} {
		if re.MatchString(h) {
			t.Errorf("authResponseHeadersRegex takes %q from the app's request", h)
		}
	}
	if h, _ := fa["authResponseHeaders"].([]any); !slices.Contains(h, any("Cookie")) {
		t.Errorf("authResponseHeaders %v: the app gets the browser's Cookie with wxgate's session ID", h)
	}
	rule := yamlPath(t, doc, "http", "routers", "wxgate", "rule").(string)
	if !strings.Contains(rule, "!PathPrefix(`/_wxgate/auth`)") {
		t.Errorf("wxgate router %q: a browser could ask the forward-auth question itself", rule)
	}
	if mw := yamlPath(t, doc, "http", "routers", "app", "middlewares").([]any); !slices.Contains(mw, any("wxgate-auth")) {
		t.Errorf("app router middlewares %v: no wxgate-auth", mw)
	}
}

func TestEnvoyExample(t *testing.T) {
	doc := readYAML(t, "../deploy/envoy/envoy.yaml")
	hcm := yamlPath(t, doc, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config")
	if a := yamlPath(t, hcm, "common_http_protocol_options", "headers_with_underscores_action"); a != "DROP_HEADER" {
		t.Errorf("headers_with_underscores_action %v: X_WeChat_OpenID would reach a CGI app", a)
	}
	filters := yamlPath(t, hcm, "http_filters").([]any)
	var names []string
	for _, f := range filters {
		names = append(names, f.(map[string]any)["name"].(string))
	}
	want := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"}
	if !slices.Equal(names, want) {
		t.Fatalf("http_filters %v, want %v (the client's copies go before wxgate is asked)", names, want)
	}
	removed := map[string]bool{}
	for _, m := range yamlPath(t, filters[0], "typed_config", "mutations", "request_mutations").([]any) {
		removed[m.(map[string]any)["remove"].(string)] = true
	}
	authz := yamlPath(t, filters[1], "typed_config").(map[string]any)
	if authz["failure_mode_allow"] == true {
		t.Error("failure_mode_allow: wxgate down would let everyone in")
	}
	svc := yamlPath(t, authz, "http_service")
	if p := yamlPath(t, svc, "path_prefix"); p != "/_wxgate/auth" {
		t.Errorf("path_prefix %v, want /_wxgate/auth (the form wxgate reads)", p)
	}
	patterns := func(path ...any) map[string]bool {
		out := map[string]bool{}
		for _, p := range yamlPath(t, svc, path...).([]any) {
			out[p.(map[string]any)["exact"].(string)] = true
		}
		return out
	}
	upstream := patterns("authorization_response", "allowed_upstream_headers", "patterns")
	for _, h := range identityHeaders {
		h = strings.ToLower(h)
		if !removed[h] {
			t.Errorf("header_mutation does not remove %s: a client's copy reaches the app when wxgate sends none", h)
		}
		if !upstream[h] {
			t.Errorf("allowed_upstream_headers misses %s: the app never gets it", h)
		}
	}
	if !upstream["cookie"] {
		t.Error("allowed_upstream_headers misses cookie: the app gets the browser's Cookie with wxgate's session ID")
	}
	client := patterns("authorization_response", "allowed_client_headers", "patterns")
	for h := range client {
		if strings.HasPrefix(h, "x-wechat") || h == "x-forwarded-user" {
			t.Errorf("allowed_client_headers shows %s to the client", h)
		}
	}
	asked := patterns("authorization_request", "allowed_headers", "patterns")
	for _, h := range []string{"cookie", "authorization", "origin", "sec-websocket-key"} {
		if !asked[h] {
			t.Errorf("allowed_headers misses %s: wxgate cannot see the session or a WebSocket's origin", h)
		}
	}
	for _, h := range []string{"x-forwarded-host", "x-forwarded-uri", "x-forwarded-method", "x-original-url"} {
		if asked[h] {
			t.Errorf("allowed_headers passes the client's %s to wxgate as Envoy's word", h)
		}
	}
	routes := yamlPath(t, hcm, "route_config", "virtual_hosts", 0, "routes").([]any)
	first := routes[0].(map[string]any)
	if yamlPath(t, first, "match", "prefix") != "/_wxgate/auth" || yamlPath(t, first, "direct_response", "status") != 404 {
		t.Errorf("first route %v: a browser could ask the forward-auth question itself", first)
	}
}
