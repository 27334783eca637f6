package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	// The gateway keeps its upstream connections alive: a benchmark that
	// dialled per request would measure the dial.
	var conns atomic.Int64
	e.upstream.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	h := e.gw.App().Handler()
	host := strings.TrimPrefix(e.url, "http://")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			// Parsed from the wire, as the server would, so that the edge
			// sees the raw header block.
			raw := "GET " + tc.path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: " + weChatUA + "\r\n"
			for k, v := range tc.hdr {
				raw += k + ": " + v + "\r\n"
			}
			var req fasthttp.Request
			if err := req.Read(bufio.NewReader(strings.NewReader(raw + "\r\n"))); err != nil {
				b.Fatal(err)
			}
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for b.Loop() {
				ctx.Init(&req, addr, nil)
				h(&ctx)
				if ctx.Response.StatusCode() != http.StatusOK {
					b.Fatalf("%s: status %d", tc.name, ctx.Response.StatusCode())
				}
				// Write the answer out as the server would: that ends the
				// upstream body and returns its connection to the pool.
				if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
				ctx.Response.Reset()
			}
		})
	}
	if n := conns.Load(); n > int64(len(cases)) {
		b.Fatalf("%d upstream connections: the benchmark is measuring dials", n)
	}
}
