package proxy

import (
	"net/url"
	"strings"
)

// safeRedirect returns rd if it is a safe place to send the browser after
// login or logout, and "/" otherwise. Safe is a relative path ("/x?y"), or
// an absolute http(s) URL without userinfo whose origin is the public URL's
// or whose host is in allowed_redirect_hosts or handoff_hosts
// (allowedOrigin). Protocol-relative ("//evil"), backslash ("/\evil"),
// whitespace and control characters (which browsers strip, so "/\t/evil"
// becomes "//evil"), and their percent-encoded forms are refused.
func (s *Server) safeRedirect(rd string) string {
	if rd == "" || len(rd) > maxReturnURL {
		return "/"
	}
	for i := 0; i < len(rd); i++ {
		if c := rd[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	// What a lenient browser or upstream might see after one more decoding.
	dec, err := url.PathUnescape(rd)
	if err != nil {
		return "/"
	}
	if strings.ContainsAny(dec, "\\\x00\t\r\n") {
		return "/"
	}
	if strings.HasPrefix(rd, "/") {
		if strings.HasPrefix(rd, "//") || strings.HasPrefix(dec, "//") {
			return "/"
		}
		u, err := url.Parse(rd)
		if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
			return "/"
		}
		return rd
	}
	u, err := url.Parse(rd)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Host == "" || u.Opaque != "" {
		return "/"
	}
	if !s.allowedOrigin(u) {
		return "/"
	}
	return u.String()
}

// allowedOrigin reports whether an absolute URL may be a redirect target.
// The public URL's origin is compared whole (scheme, host and port):
// another port or scheme of the same host is another site. Other hosts
// must be in allowed_redirect_hosts or handoff_hosts, on https (or http
// when the public URL is http, as in development), and on their scheme's
// default port unless the entry names a port.
func (s *Server) allowedOrigin(u *url.URL) bool {
	host, authority, err := parseHost(u.Host)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Scheme, s.public.Scheme) && withoutDefaultPort(u.Scheme, authority) == s.publicAuthority {
		return true
	}
	if u.Scheme != "https" && s.public.Scheme == "https" {
		return false
	}
	port := strings.TrimPrefix(withoutDefaultPort(u.Scheme, authority), host)
	return listed(s.live.Load().redirectHosts, host, port) || listed(s.cfg.Server.HandoffHosts, host, port)
}

// withoutDefaultPort drops the scheme's default port from an authority, so
// http://a:80 and http://a compare equal.
func withoutDefaultPort(scheme, authority string) string {
	switch scheme {
	case "http":
		return strings.TrimSuffix(authority, ":80")
	case "https":
		return strings.TrimSuffix(authority, ":443")
	}
	return authority
}
