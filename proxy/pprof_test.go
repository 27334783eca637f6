package proxy_test

import (
	"net/http"
	"testing"
)

// TestPprof: [server] pprof serves Go's profiles on the admin listener
// only, only when set, and behind the admin token like the admin API.
func TestPprof(t *testing.T) {
	t.Setenv("WXGATE_TEST_ADMIN", adminSecret)
	on := newEnvOpts(t, envOptions{adminEnv: "WXGATE_TEST_ADMIN", serverKeys: "pprof = true"})
	off := newEnvOpts(t, envOptions{adminEnv: "WXGATE_TEST_ADMIN"})
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(url, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, url, token string
		want             int
	}{
		{"on, with the admin token", on.adminURL + "/debug/pprof/heap", adminSecret, http.StatusOK},
		{"on, without a token", on.adminURL + "/debug/pprof/heap", "", http.StatusUnauthorized},
		{"on, a wrong token", on.adminURL + "/debug/pprof/heap", "not-the-admin-token-at-all", http.StatusUnauthorized},
		{"on, through the public listener", on.url + "/debug/pprof/heap", "", http.StatusFound},
		{"off", off.adminURL + "/debug/pprof/heap", adminSecret, http.StatusNotFound},
	} {
		if got := get(tc.url, tc.token); got != tc.want {
			t.Errorf("%s: GET %s = %d, want %d", tc.name, tc.url, got, tc.want)
		}
	}
}
