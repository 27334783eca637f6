package proxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestProbeSpellings: with probe_answer = "upstream", no spelling of a
// path brings anything but the probe itself to the upstream without a
// login, and never the client's identity headers or wxgate's cookie. Paths
// that only look like a probe ("/favicon.ico/../orders", "/FAVICON.ICO",
// "/favicon.ico;x") start a login like any other page, and ones the policy
// cannot read one way are refused.
func TestProbeSpellings(t *testing.T) {
	e := newEnvOpts(t, envOptions{policyKeys: `probe_answer = "upstream"`})
	host := strings.TrimPrefix(e.url, "http://")
	for _, tc := range []struct {
		path string
		want int // 200: the probe reached the upstream as /favicon.ico
	}{
		{"/favicon.ico", http.StatusOK},
		{"/%66avicon%2Eico", http.StatusOK},
		{"//favicon.ico", http.StatusOK},
		{"/orders/../favicon.ico", http.StatusOK},
		{"/denied/../favicon.ico", http.StatusOK},
		{"/favicon.ico/../orders", http.StatusFound},
		{"/favicon.ico%2F..%2Forders", http.StatusFound},
		{"/favicon.ico%3F/../orders", http.StatusFound},
		{"/FAVICON.ICO", http.StatusFound},
		{"/favicon.ico;x", http.StatusFound},
		{"/favicon.ico%3Bx", http.StatusFound},
		{"/favicon.ico.", http.StatusFound},
		{"/favicon.ico/", http.StatusFound},
		{"/favicon.ico%20", http.StatusFound},
		{"/orders/..;/favicon.ico", http.StatusFound},
		{"/x/..%2Ffavicon.ico", http.StatusFound},
		{"/favicon.ico%00", http.StatusBadRequest},
		{"/orders%2F..%2F..%2Ffavicon.ico", http.StatusBadRequest},
	} {
		resp, body := e.dial().send("GET " + tc.path + " HTTP/1.1\r\nHost: " + host +
			"\r\nX-WeChat-OpenID: forged\r\nX-Forwarded-User: forged\r\nCookie: wxgate_session=forged\r\nConnection: close\r\n\r\n")
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("GET %s: %v, want %d", tc.path, resp, tc.want)
			continue
		}
		if resp.StatusCode == http.StatusFound && !strings.Contains(resp.Header.Get("Location"), "/_wxgate/start") {
			t.Errorf("GET %s: redirected to %q, want the login", tc.path, resp.Header.Get("Location"))
		}
		if resp.StatusCode != http.StatusOK {
			continue
		}
		var got echo
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("GET %s: upstream answer %q: %v", tc.path, body, err)
		}
		h, _ := json.Marshal(got.Headers)
		if got.URI != "/favicon.ico" || strings.Contains(string(h), "forged") {
			t.Errorf("GET %s: the upstream got %s with %s, want /favicon.ico and nothing forged", tc.path, got.URI, h)
		}
	}
}
