package proxy_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxy measures one proxied GET through the gateway's handler to a
// loopback upstream: "public" (no identity: the baseline), "cookie" (a
// browser session) and "bearer" (a mini-program access token). Compare the
// last two with the first: the difference is what identity costs.
func BenchmarkProxy(b *testing.B) {
	e := newEnv(b)
	br := e.browser(weChatUA)
	br.login("/", "alice")
	cookie := "wxgate_session=" + br.cookie("wxgate_session")
	pair := (&api{e: e, c: &http.Client{}}).mpLogin("dora")
	bearer := "Bearer " + pair["access_token"].(string)

	cases := []struct {
		name, path string
		hdr        map[string]string
	}{
		{"public", "/public/x", nil},
		{"cookie", "/x", map[string]string{"Cookie": cookie}},
		{"bearer", "/api/x", map[string]string{"Authorization": bearer}},
	}
	// The same small answer for every case, so differences are the gateway's.
	e.upstream.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	h := e.gw.App().Handler()
	host := strings.TrimPrefix(e.url, "http://")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var req fasthttp.Request
			req.SetRequestURI(tc.path)
			req.Header.SetHost(host)
			req.Header.Set("User-Agent", weChatUA)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for b.Loop() {
				ctx.Init(&req, addr, nil)
				h(&ctx)
				if ctx.Response.StatusCode() != http.StatusOK {
					b.Fatalf("%s: status %d", tc.name, ctx.Response.StatusCode())
				}
				ctx.Response.Reset() // closes the upstream body, freeing the connection
			}
		})
	}
}
