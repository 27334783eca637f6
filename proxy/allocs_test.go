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

// hotPath returns a func that serves one request of each kind BenchmarkProxy
// measures through the gateway's handler, from raw bytes as the server
// parses them, and checks its answer.
func hotPath(t testing.TB) map[string]func() {
	// A fasthttp upstream, which allocates next to nothing itself: what
	// is counted is the gateway's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(c *fasthttp.RequestCtx) { c.SetBodyString("ok") }}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Shutdown() })
	e := newEnvOpts(t, envOptions{appUpstream: "http://" + ln.Addr().String()})
	br := e.browser(weChatUA)
	br.login("/", "alice")
	cookie := "wxgate_session=" + br.cookie("wxgate_session")
	pair := (&api{e: e, c: &http.Client{}}).mpLogin("dora")
	bearer := "Bearer " + pair["access_token"].(string)
	h := e.gw.App().Handler()
	host := strings.TrimPrefix(e.url, "http://")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	serve := func(path string, hdr ...string) func() {
		raw := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: " + weChatUA + "\r\n"
		for _, h := range hdr {
			raw += h + "\r\n"
		}
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(raw + "\r\n"))); err != nil {
			t.Fatal(err)
		}
		var ctx fasthttp.RequestCtx
		return func() {
			ctx.Init(&req, addr, nil)
			h(&ctx)
			if ctx.Response.StatusCode() != http.StatusOK {
				t.Fatalf("GET %s: status %d", path, ctx.Response.StatusCode())
			}
			// Written out as the server would: that ends the upstream
			// body and returns its connection to the pool.
			if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
				t.Fatal(err)
			}
			ctx.Response.Reset()
		}
	}
	return map[string]func(){
		"public": serve("/public/x"),
		"cookie": serve("/x", "Cookie: "+cookie),
		"bearer": serve("/api/x", "Authorization: "+bearer),
	}
}

// TestHotPathAllocs bounds the allocations of a proxied request (STYLE.md
// 7), all goroutines counted, with an upstream that allocates next to
// nothing. Counted so, issue 10 began at 19 (public), 50 (cookie) and 42
// (bearer) per request (9a232bc).
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	paths := hotPath(t)
	for _, tc := range []struct {
		name string
		max  float64
	}{
		{"public", 10},
		{"cookie", 19},
		{"bearer", 15},
	} {
		serve := paths[tc.name]
		serve() // warm: pools, the upstream connection, caches
		got := testing.AllocsPerRun(200, serve)
		t.Logf("%s: %.0f allocations per request", tc.name, got)
		if got > tc.max {
			t.Errorf("%s: %.0f allocations per request, want at most %.0f", tc.name, got, tc.max)
		}
	}
}
