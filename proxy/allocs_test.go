package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestProxyAllocs pins what one proxied GET allocates, the upstream a
// fasthttp server that allocates nothing per request: a public route, a
// browser session and a bearer token (issue 10). The ceilings are the
// counts of the change that added this test (before it: 19, 50 and 42);
// lower them as the path gets cheaper.
func TestProxyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	e := newEnvOpts(t, envOptions{appUpstream: "http://" + ln.Addr().String()})
	br := e.browser(weChatUA)
	br.login("/", "alice")
	cookie := "wxgate_session=" + br.cookie("wxgate_session")
	bearer := "Bearer " + (&api{e: e, c: &http.Client{}}).mpLogin("dora")["access_token"].(string)

	h := e.gw.App().Handler()
	host := strings.TrimPrefix(e.url, "http://")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	for _, tc := range []struct {
		name, path, header string
		max                float64
	}{
		{"public", "/public/x", "", 11},
		{"cookie", "/x", "Cookie: " + cookie, 36},
		{"bearer", "/api/x", "Authorization: " + bearer, 29},
	} {
		raw := "GET " + tc.path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: " + weChatUA + "\r\n"
		if tc.header != "" {
			raw += tc.header + "\r\n"
		}
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(raw + "\r\n"))); err != nil {
			t.Fatal(err)
		}
		var ctx fasthttp.RequestCtx
		got := testing.AllocsPerRun(200, func() {
			ctx.Init(&req, addr, nil)
			h(&ctx)
			if ctx.Response.StatusCode() != http.StatusOK {
				t.Fatalf("%s: status %d", tc.name, ctx.Response.StatusCode())
			}
			if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
				t.Fatal(err)
			}
			ctx.Response.Reset()
		})
		t.Logf("%s: %v allocations per request", tc.name, got)
		if got > tc.max {
			t.Errorf("%s: %v allocations per proxied request, want at most %v", tc.name, got, tc.max)
		}
	}
}
