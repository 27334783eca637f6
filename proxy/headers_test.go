package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestSpoofable(t *testing.T) {
	tests := []struct {
		name    string
		trusted bool
		want    bool
	}{
		{"X-WeChat-OpenID", false, true},
		{"x_wechat_openid", false, true},
		{"X-WECHAT-ANYTHING-NEW", false, true},
		{"X_Forwarded_User", true, true},
		{"Remote-User", true, true},
		{"X-Real-IP", true, false},
		{"X-Real-IP", false, true},
		{"True-Client-IP", false, true},
		{"cf_connecting_ip", false, true},
		{"X-Client-IP", false, true},
		{"X-Cluster-Client-IP", false, true},
		{"Fastly-Client-IP", false, true},
		{"True-Client-IP", true, false},
		{"X-Forwarded-For", false, true},
		{"X-Forwarded-For", true, false},
		{"x_forwarded_proto", false, true},
		{"X-Request-ID", false, true},
		{"X-Request-ID", true, false},
		{"Forwarded", false, true},
		{"X-WeChatty", false, false},
		{"Accept", false, false},
		{"Authorization", false, false},
	}
	for _, tc := range tests {
		if got := spoofable([]byte(tc.name), tc.trusted); got != tc.want {
			t.Errorf("spoofable(%q, trusted=%v) = %v, want %v", tc.name, tc.trusted, got, tc.want)
		}
	}
}

func TestSanitizeRequest(t *testing.T) {
	tests := []struct {
		name    string
		trusted bool
		in      map[string]string
		gone    []string
		kept    map[string]string
	}{
		{
			name: "connection-listed and hop-by-hop headers",
			in:   map[string]string{"Connection": "keep-alive, X-Foo, x-bar", "X-Foo": "1", "X-Bar": "2", "Keep-Alive": "timeout=5", "Te": "trailers", "Upgrade": "websocket", "X-Keep": "yes"},
			gone: []string{"X-Foo", "X-Bar", "Keep-Alive", "Te", "Upgrade", "Connection"},
			kept: map[string]string{"X-Keep": "yes"},
		},
		{
			name: "keep-alive alone",
			in:   map[string]string{"Connection": "Keep-Alive", "Keep-Alive": "timeout=5", "X-Keep": "yes"},
			gone: []string{"Keep-Alive", "Connection"},
			kept: map[string]string{"X-Keep": "yes"},
		},
		{
			name: "Connection cannot remove the framing",
			in:   map[string]string{"Connection": "Content-Length, Host, X-Foo", "X-Foo": "1", "Content-Length": "0"},
			gone: []string{"X-Foo", "Connection"},
			kept: map[string]string{"Content-Length": "0"},
		},
		{
			name: "untrusted forwarded headers",
			in:   map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Request-Id": "mine", "X-WeChat-OpenID": "o"},
			gone: []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "X-WeChat-OpenID"},
		},
		{
			name:    "trusted proxy keeps its forwarded headers, never identity",
			trusted: true,
			in:      map[string]string{"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Request-Id": "lb-1", "X-WeChat-OpenID": "o"},
			gone:    []string{"X-WeChat-OpenID"},
			kept:    map[string]string{"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Request-Id": "lb-1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			for k, v := range tc.in {
				h.Set(k, v)
			}
			h.Set("Cookie", "a=1; wxgate_session=s; __Host-wxgate_login=l; b=2")
			sanitizeRequest(&h, tc.trusted)
			for _, k := range tc.gone {
				if v := h.Peek(k); len(v) > 0 {
					t.Errorf("%s = %q survived", k, v)
				}
			}
			for k, want := range tc.kept {
				if got := string(h.Peek(k)); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if c := string(h.Peek("Cookie")); strings.Contains(c, "wxgate") || !strings.Contains(c, "a=1") || !strings.Contains(c, "b=2") {
				t.Errorf("Cookie = %q", c)
			}
		})
	}
}

func TestSetForwarded(t *testing.T) {
	var h fasthttp.RequestHeader
	h.Set("X-Forwarded-For", "1.2.3.4")
	h.Set("X-Forwarded-Proto", "https")
	setForwarded(&h, netip.MustParseAddr("10.0.0.2"), "http", "app.example.com", true)
	if got := string(h.Peek("X-Forwarded-For")); got != "1.2.3.4, 10.0.0.2" {
		t.Errorf("trusted X-Forwarded-For = %q", got)
	}
	if got := string(h.Peek("X-Forwarded-Proto")); got != "https" {
		t.Errorf("trusted X-Forwarded-Proto = %q", got)
	}
	var u fasthttp.RequestHeader
	setForwarded(&u, netip.MustParseAddr("203.0.113.7"), "http", "app.example.com", false)
	if string(u.Peek("X-Forwarded-For")) != "203.0.113.7" || string(u.Peek("X-Forwarded-Host")) != "app.example.com" {
		t.Errorf("untrusted: %s", u.String())
	}
}
