package proxy

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		in, name, authority string
		bad                 bool
	}{
		{in: "example.com", name: "example.com", authority: "example.com"},
		{in: "Example.COM.", name: "example.com", authority: "example.com"},
		{in: "example.com.:8080", name: "example.com", authority: "example.com:8080"},
		{in: "EXAMPLE.com:8080", name: "example.com", authority: "example.com:8080"},
		{in: "example.com:08080", name: "example.com", authority: "example.com:8080"},
		{in: "127.0.0.1:9090", name: "127.0.0.1", authority: "127.0.0.1:9090"},
		{in: "[::1]:9090", name: "[::1]", authority: "[::1]:9090"},
		{in: "[0:0::1]", name: "[::1]", authority: "[::1]"},
		{in: "in_ternal.local", name: "in_ternal.local", authority: "in_ternal.local"},
		{in: "", bad: true},
		{in: "a:80:80", bad: true},
		{in: "a:", bad: true},
		{in: "a:0", bad: true},
		{in: "a:65536", bad: true},
		{in: "a:http", bad: true},
		{in: "a..", bad: true},
		{in: ".a", bad: true},
		{in: "a..b", bad: true},
		{in: "user@a", bad: true},
		{in: "a b", bad: true},
		{in: "a%2eb", bad: true},
		{in: "[::1", bad: true},
		{in: "[::1]x", bad: true},
		{in: "[127.0.0.1]", bad: true},
		{in: "[fe80::1%eth0]", bad: true},
		{in: "::1", bad: true},
		{in: strings.Repeat("a", 64) + ".com", bad: true},
		{in: "é.com", bad: true},
	}
	for _, tc := range tests {
		name, authority, err := parseHost(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseHost(%q) = %q, %q; want an error", tc.in, name, authority)
			}
			continue
		}
		if err != nil || name != tc.name || authority != tc.authority {
			t.Errorf("parseHost(%q) = %q, %q, %v; want %q, %q", tc.in, name, authority, err, tc.name, tc.authority)
		}
	}
}

func TestCheckHead(t *testing.T) {
	ok := "Host: a\r\nX-Foo: b\r\n\r\n"
	tests := []struct {
		name, raw string
		ok        bool
	}{
		{"plain", ok, true},
		{"tab in a value", "Host: a\r\nX-Foo: b\tc\r\n\r\n", true},
		{"UTF-8 in a value", "Host: a\r\nUser-Agent: 微信\r\n\r\n", true},
		{"chunked", "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"Content-Length", "Host: a\r\nContent-Length: 12\r\n\r\n", true},
		{"bare LF", "Host: a\nX-Foo: b\r\n\r\n", false},
		{"bare CR", "Host: a\r\nX-Foo: b\rc\r\n\r\n", false},
		{"NUL", "Host: a\r\nX-Foo: b\x00\r\n\r\n", false},
		{"obs-fold", "Host: a\r\nX-Foo: b\r\n c\r\n\r\n", false},
		{"no name", "Host: a\r\n: b\r\n\r\n", false},
		{"bad name", "Host: a\r\nX Foo: b\r\n\r\n", false},
		{"TE and CL", "Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false},
		{"two CL", "Host: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", false},
		{"CL not a number", "Host: a\r\nContent-Length: 3 4\r\n\r\n", false},
		{"gzip", "Host: a\r\nTransfer-Encoding: gzip\r\n\r\n", false},
		{"no Host", "X-Foo: b\r\n\r\n", false},
		{"two Hosts", "Host: a\r\nhost: a\r\n\r\n", false},
		{"no end", "Host: a", false},
	}
	for _, tc := range tests {
		err := checkHead([]byte(tc.raw))
		if (err == nil) != tc.ok {
			t.Errorf("checkHead(%s) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, errHead) {
			t.Errorf("checkHead(%s) = %v, not an errHead", tc.name, err)
		}
	}
}

func TestAllowedOrigin(t *testing.T) {
	s := &Server{cfg: &Config{Server: ServerConfig{AllowedRedirectHosts: []string{"good.example.com", ".trusted.example", "alt.example.com:8443"}}}}
	s.live.Store(&live{redirectHosts: s.cfg.Server.AllowedRedirectHosts})
	s.public, _ = url.Parse("https://app.example.com")
	s.publicAuthority = "app.example.com"
	tests := []struct {
		rd   string
		want bool
	}{
		{"https://app.example.com/x", true},
		{"https://APP.example.com:443/x", true},
		{"https://app.example.com./x", true},
		{"http://app.example.com/x", false},
		{"https://app.example.com:8443/x", false},
		{"https://good.example.com/x", true},
		{"http://good.example.com/x", false},
		{"https://good.example.com:8443/x", false},
		{"https://a.trusted.example/x", true},
		{"https://trusted.example/x", false},
		{"https://alt.example.com:8443/x", true},
		{"https://alt.example.com/x", false},
		{"https://evil.example/x", false},
	}
	for _, tc := range tests {
		u, err := url.Parse(tc.rd)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.allowedOrigin(u); got != tc.want {
			t.Errorf("allowedOrigin(%s) = %v, want %v", tc.rd, got, tc.want)
		}
	}
}

func TestIsAdminHost(t *testing.T) {
	s := &Server{cfg: &Config{Server: ServerConfig{AdminListen: "admin.internal:9090", AdminHosts: []string{"ops.example.com", ".svc.cluster.local"}}}}
	for name, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "[::1]": true, "localhost": true, "x.localhost": true,
		"admin.internal": true, "ops.example.com": true, "wxgate.ns.svc.cluster.local": true,
		"evil.example": false, "localhost.evil.example": false, "example.com": false, "svc.cluster.local": false,
	} {
		if got := s.isAdminHost(name); got != want {
			t.Errorf("isAdminHost(%q) = %v, want %v", name, got, want)
		}
	}
}

// FuzzParseHost: no input makes parseHost panic; what it accepts it
// accepts again unchanged (normalizing once is enough), and a name never
// carries a port, a trailing dot or an upper-case letter.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"example.com", "a.:80", "[::1]:8080", "a:80:80", "A..", "[", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		name, authority, err := parseHost(in)
		if err != nil {
			return
		}
		if strings.HasSuffix(name, ".") || name != strings.ToLower(name) || (!strings.HasPrefix(name, "[") && strings.Contains(name, ":")) {
			t.Fatalf("parseHost(%q) name %q", in, name)
		}
		if authority != name && !strings.HasPrefix(authority, name+":") || authority != strings.ToLower(authority) {
			t.Fatalf("parseHost(%q) authority %q is not the name %q with a port", in, authority, name)
		}
		n2, a2, err := parseHost(authority)
		if err != nil || n2 != name || a2 != authority {
			t.Fatalf("parseHost(%q) = %q, %q; again: %q, %q, %v", in, name, authority, n2, a2, err)
		}
	})
}

// FuzzCheckHead: no header block makes checkHead panic, and none that
// carries a bare CR or LF, a NUL or a folded line gets through.
func FuzzCheckHead(f *testing.F) {
	for _, s := range []string{"Host: a\r\n\r\n", "Host: a\nX: b\r\n\r\n", "Host: a\r\nX: b\r\n c\r\n\r\n", "Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if checkHead(raw) != nil {
			return
		}
		lines := bytes.Split(raw, []byte("\r\n"))
		for _, l := range lines {
			if bytes.ContainsAny(l, "\r\n\x00") || len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
				t.Fatalf("checkHead accepted %q", raw)
			}
		}
	})
}

// FuzzSafeRedirect: whatever rd is, the browser is sent to a path of this
// site or to an allowed origin, never somewhere a browser would read as
// another host.
func FuzzSafeRedirect(f *testing.F) {
	s := &Server{cfg: &Config{Server: ServerConfig{AllowedRedirectHosts: []string{"good.example.com", ".trusted.example"}}}}
	s.live.Store(&live{redirectHosts: s.cfg.Server.AllowedRedirectHosts})
	s.public, _ = url.Parse("https://app.example.com")
	s.publicAuthority = "app.example.com"
	for _, rd := range []string{"/ok", "//evil", "/\\evil", "https://good.example.com/x", "https://good.example.com@evil/", "/%2F/evil", "https:evil", "/\t/evil"} {
		f.Add(rd)
	}
	f.Fuzz(func(t *testing.T, rd string) {
		got := s.safeRedirect(rd)
		if strings.ContainsAny(got, "\\\x00\t\r\n ") {
			t.Fatalf("safeRedirect(%q) = %q: a character browsers strip or rewrite", rd, got)
		}
		if strings.HasPrefix(got, "/") {
			if strings.HasPrefix(got, "//") {
				t.Fatalf("safeRedirect(%q) = %q: protocol-relative", rd, got)
			}
			if dec, err := url.PathUnescape(got); err == nil && (strings.HasPrefix(dec, "//") || strings.Contains(dec, "\\")) {
				t.Fatalf("safeRedirect(%q) = %q: protocol-relative once decoded", rd, got)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || u.User != nil || !s.allowedOrigin(u) {
			t.Fatalf("safeRedirect(%q) = %q: not an allowed origin", rd, got)
		}
	})
}

// FuzzSpoofable: any header name that folds to one of wxgate's identity
// headers, in any case and with "_" for "-", is removed.
func FuzzSpoofable(f *testing.F) {
	for _, s := range []string{"X-WeChat-OpenID", "x_wechat_identity", "X-Forwarded-User", "Accept", "X-WECHAT-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		folded := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		own := strings.HasPrefix(folded, "x-wechat-") || folded == "x-forwarded-user"
		if own && !spoofable([]byte(name), true) {
			t.Fatalf("spoofable(%q) = false; it folds to %q, a header wxgate sets", name, folded)
		}
	})
}

// FuzzBearer: no Authorization value makes the bearer parser panic, and a
// value it takes as a token is a Bearer one.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer abc", "Basic abc", "Bearer", "Bearer   ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !isBearer([]byte(v)) {
			return
		}
		tok := parseBearer(v)
		if !strings.EqualFold(v[:6], "bearer") || !strings.Contains(v, tok) {
			t.Fatalf("parseBearer(%q) = %q", v, tok)
		}
	})
}
