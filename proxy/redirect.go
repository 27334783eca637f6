package proxy

import (
	"net/url"
	"strings"
)

// safeRedirect returns rd if it is a safe place to send the browser after
// login or logout, and "/" otherwise. Safe is a relative path ("/x?y"), or
// an absolute http(s) URL without userinfo whose host is the public URL's or
// in allowed_redirect_hosts. Protocol-relative ("//evil"), backslash
// ("/\evil"), whitespace and control characters (which browsers strip, so
// "/\t/evil" becomes "//evil"), and their percent-encoded forms are refused.
func (s *Server) safeRedirect(rd string) string {
	if rd == "" || len(rd) > 4096 {
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
	if !s.allowedHost(u.Hostname()) {
		return "/"
	}
	return u.String()
}

// allowedHost reports whether host may be a redirect target.
func (s *Server) allowedHost(host string) bool {
	host = strings.ToLower(host)
	if host == "" {
		return false
	}
	if host == strings.ToLower(s.public.Hostname()) {
		return true
	}
	for _, h := range s.cfg.Server.AllowedRedirectHosts {
		h = strings.ToLower(h)
		if strings.HasPrefix(h, ".") {
			if strings.HasSuffix(host, h) && len(host) > len(h) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}
