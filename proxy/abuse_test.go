package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// TestStartTotalNotExhaustedByOneIPv6Customer: behind a trusted load
// balancer, one customer with an IPv6 /48 (a free tunnel broker hands one
// out; many hosts give a /56) spreads its /start requests over many /64s.
// Each /64 stays under max_pending_per_client, yet together they fill
// max_pending and every other client's login is refused with 429 for the
// pending lifetime (10 minutes, renewed as long as the flood goes on).
// With the defaults (300 per client, 100000 in total) 334 /64s suffice;
// here the bounds are scaled down to 20 and 1000 (50 /64s).
func TestStartTotalNotExhaustedByOneIPv6Customer(t *testing.T) {
	t.Setenv("WXGATE_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
	e := newEnvOpts(t, envOptions{maxPending: 1000, maxPendingPerClient: 20})
	flood := e.browser(weChatUA)
	admitted := 0
	for n := 0; n < 60; n++ {
		xff := fmt.Sprintf("2001:db8:1:%x::1", n) // one /48, another /64 each time
		for i := 0; i < 20; i++ {
			resp, _ := flood.get("/_wxgate/start?rd=/", map[string]string{"X-Forwarded-For": xff})
			if resp.StatusCode == http.StatusFound {
				admitted++
			}
		}
	}
	t.Logf("one /48 got %d pending logins admitted", admitted)
	victim := e.browser(weChatUA)
	resp, _ := victim.get("/_wxgate/start?rd=/", map[string]string{"X-Forwarded-For": "198.51.100.7"})
	if resp.StatusCode == http.StatusTooManyRequests {
		t.Errorf("an unrelated client's login start: 429: one IPv6 /48 exhausted max_pending")
	}
}

// TestMethodOverrideMeetsMethodRules: upstreams read the method from
// X-HTTP-Method-Override on a POST (Rails' default Rack::MethodOverride,
// Laravel/Symfony, gorilla/handlers, Express's method-override, ASP.NET
// Core's UseHttpMethodOverride) while wxgate judges a POST, so a rule
// limited to DELETE would be bypassed with POST + X-HTTP-Method-Override:
// DELETE. wxgate removes the override headers. The upstream here behaves as
// Rack::MethodOverride does. (A _method field in a form body is not seen:
// docs/security.md says so.)
func TestMethodOverrideMeetsMethodRules(t *testing.T) {
	var deleted atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if o := r.Header.Get("X-HTTP-Method-Override"); method == http.MethodPost && o != "" {
			method = o
		}
		if method == http.MethodDelete {
			deleted.Add(1)
			io.WriteString(w, "deleted "+r.URL.Path)
			return
		}
		io.WriteString(w, method+" "+r.URL.Path)
	}))
	defer upstream.Close()
	sim := wechatsim.New(wechatsim.App{AppID: mpID, Secret: mpSecret, Type: wechatsim.MiniProgram, OpenPlatformID: "open-1"})
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	dir := t.TempDir()
	ln, pub := listen()
	admin, _ := listen()
	conf := fmt.Sprintf(`
[server]
public_url = %q
admin_listen = "127.0.0.1:0"
log_level = "error"
[wechat]
api_base = %q
open_base = %q
[wechat.miniprogram]
appid = %q
secret = %q
[tokens]
signing_key_file = %q
[[upstream]]
name = "orders"
url = %q
[policy]
default = "public"
[[route]]
name = "no-deletes"
path = "/orders/**"
methods = ["DELETE"]
action = "deny"
`, pub, simSrv.URL, simSrv.URL, mpID, mpSecret, filepath.Join(dir, "key.pem"), upstream.URL)
	path := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := proxy.LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		t.Fatal(err)
	}
	gw, err := proxy.New(cfg, proxy.Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gw.Serve(ln, admin) }()
	defer gw.Shutdown(t.Context())

	req, _ := http.NewRequest(http.MethodDelete, pub+"/orders/42", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("DELETE /orders/42: %d, want 403 (the control case)", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, pub+"/orders/42", nil)
	req.Header.Set("X-HTTP-Method-Override", "DELETE")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if deleted.Load() > 0 {
		t.Errorf("POST /orders/42 with X-HTTP-Method-Override: DELETE: %d %q: the upstream ran its DELETE handler past a DELETE deny rule", resp.StatusCode, body)
	}
}

// TestCompletedLoginsFreeTheirStarts: the bound is on logins in flight. A
// client (one address: a carrier-grade NAT, an office) whose people finish
// their logins keeps getting to log in; one that only starts them is
// refused at the bound. The soak test found the first refused after 300
// logins in ten minutes.
func TestCompletedLoginsFreeTheirStarts(t *testing.T) {
	e := newEnvOpts(t, envOptions{maxPendingPerClient: 3})
	for i := range 8 {
		b := e.browser(weChatUA)
		if got := b.login("/orders", fmt.Sprintf("nat%d", i)); !strings.HasSuffix(got, "/orders") {
			t.Fatalf("login %d of 8 from one address: landed on %s", i+1, got)
		}
	}
	// Starts that never finish still count: the fourth is refused.
	b := e.browser(weChatUA)
	for i := range 4 {
		resp, _ := b.get("/_wxgate/start?rd=%2F", nil)
		want := http.StatusFound
		if i == 3 {
			want = http.StatusTooManyRequests
		}
		if resp.StatusCode != want {
			t.Fatalf("unfinished start %d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}
