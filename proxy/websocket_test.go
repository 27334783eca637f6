package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsUpstream is an upstream that speaks WebSocket: paths ending in
// /headers first send the handshake's headers as a JSON message, /close
// sends "bye" and closes the TCP connection, /refuse answers 403; every
// WebSocket echoes. Other requests get the usual echo of the request.
type wsUpstream struct {
	*httptest.Server
	handshakes atomic.Int64  // WebSocket requests received
	requests   atomic.Int64  // every request received
	ended      chan struct{} // one per WebSocket the upstream saw end
}

func newWSUpstream(t *testing.T) *wsUpstream {
	u := &wsUpstream{ended: make(chan struct{}, 16)}
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		if !websocket.IsWebSocketUpgrade(r) {
			upstreamHandler(w, r)
			return
		}
		u.handshakes.Add(1)
		if strings.HasSuffix(r.URL.Path, "/refuse") {
			http.Error(w, "no websockets here", http.StatusForbidden)
			return
		}
		conn, err := upgrader.Upgrade(w, r, http.Header{"X-Upstream": {"yes"}})
		if err != nil {
			return
		}
		defer func() { u.ended <- struct{}{} }()
		defer conn.Close()
		switch {
		case strings.HasSuffix(r.URL.Path, "/headers"):
			h := map[string][]string{}
			for k, v := range r.Header {
				h[k] = v
			}
			h["Host"] = []string{r.Host}
			b, _ := json.Marshal(echo{Method: r.Method, URI: r.RequestURI, Headers: h})
			if conn.WriteMessage(websocket.TextMessage, b) != nil {
				return
			}
		case strings.HasSuffix(r.URL.Path, "/close"):
			_ = conn.WriteMessage(websocket.TextMessage, []byte("bye"))
			return
		}
		for {
			kind, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if conn.WriteMessage(kind, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(u.Close)
	return u
}

// wsDial opens a WebSocket to path through e with the headers h; resp is
// the handshake's answer (its body read into body when it failed).
func wsDial(t *testing.T, e *env, path string, h http.Header) (conn *websocket.Conn, resp *http.Response, body string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(e.url, "http")+path, h)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return nil, resp, string(b)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, resp, ""
}

// cookieHeader is b's Cookie header for the gateway.
func (b *browser) cookieHeader() http.Header {
	u, _ := url.Parse(b.e.url)
	var parts []string
	for _, c := range b.c.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return http.Header{"Cookie": {strings.Join(parts, "; ")}}
}

// echoes sends messages on conn and checks each comes back unchanged.
func echoes(t *testing.T, conn *websocket.Conn) {
	t.Helper()
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	for _, m := range []struct {
		kind int
		data []byte
	}{{websocket.TextMessage, []byte("你好")}, {websocket.BinaryMessage, big}, {websocket.TextMessage, []byte("again")}} {
		if err := conn.WriteMessage(m.kind, m.data); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		kind, got, err := conn.ReadMessage()
		if err != nil || kind != m.kind || !bytes.Equal(got, m.data) {
			t.Fatalf("echo of a %d-byte message: kind %d, %d bytes, %v", len(m.data), kind, len(got), err)
		}
	}
}

// readHeaders reads the upstream's first message on a /headers socket.
func readHeaders(t *testing.T, conn *websocket.Conn) echo {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("reading the upstream's view of the handshake: %v", err)
	}
	var got echo
	if err := json.Unmarshal(msg, &got); err != nil {
		t.Fatalf("upstream's view %q: %v", msg, err)
	}
	return got
}

func TestWebSocketWithCookieSession(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	b := e.browser(weChatUA)
	b.login("/", "alice")
	alice := e.user("alice")

	h := b.cookieHeader()
	h.Set("Cookie", h.Get("Cookie")+"; theme=dark")
	// Forged identity, in the spellings servers treat alike.
	for _, name := range []string{"X-WeChat-OpenID", "X_WeChat_OpenID", "X-Wx-Openid", "X-Forwarded-User"} {
		h[name] = []string{"SPOOFED"}
	}
	conn, resp, body := wsDial(t, e, "/ws/headers", h)
	if conn == nil {
		t.Fatalf("handshake with a session: %d %q, want 101", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Upstream") != "yes" {
		t.Errorf("the 101's headers %v lack the upstream's X-Upstream", resp.Header)
	}
	got := readHeaders(t, conn)
	if v := got.Headers["X-Wechat-Openid"]; len(v) != 1 || v[0] != alice.OpenID {
		t.Errorf("upstream's X-WeChat-OpenID %v, want [%s]", v, alice.OpenID)
	}
	if len(got.Headers["X-Wechat-Identity"]) != 1 {
		t.Errorf("upstream got no signed identity: %v", got.Headers)
	}
	for name, vals := range got.Headers {
		for _, v := range vals {
			if strings.Contains(v, "SPOOFED") || strings.Contains(v, "wxgate_") {
				t.Errorf("upstream received %s: %q", name, v)
			}
		}
	}
	if c := got.Headers["Cookie"]; len(c) != 1 || c[0] != "theme=dark" {
		t.Errorf("upstream's Cookie %q, want only the app's own", c)
	}
	if got.URI != "/ws/headers" || got.Headers["Host"][0] != strings.TrimPrefix(e.url, "http://") {
		t.Errorf("upstream saw %s on Host %v", got.URI, got.Headers["Host"])
	}
	echoes(t, conn)
	if m := grepLines(e.scrape(), "wxgate_websockets_open{"); !strings.Contains(m, `upstream="app"} 1`) {
		t.Errorf("metrics with one socket open: %q", m)
	}
	conn.Close()
	<-up.ended
	waitUntil(t, "wxgate_websockets_open to drop to 0", func() bool {
		return strings.Contains(e.scrape(), `wxgate_websockets_open{upstream="app"} 0`)
	})
}

func TestWebSocketWithBearer(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	pair := e.api().mpLogin("dora")
	dora, _ := e.sim.User(mpID, "dora")
	conn, resp, body := wsDial(t, e, "/api/ws/headers", http.Header{"Authorization": {"Bearer " + pair["access_token"].(string)}})
	if conn == nil {
		t.Fatalf("handshake with a bearer token: %d %q, want 101", resp.StatusCode, body)
	}
	got := readHeaders(t, conn)
	if v := got.Headers["X-Wechat-Openid"]; len(v) != 1 || v[0] != dora.OpenID {
		t.Errorf("upstream's X-WeChat-OpenID %v, want [%s]", v, dora.OpenID)
	}
	if a := got.Headers["Authorization"]; len(a) != 0 {
		t.Errorf("wxgate's bearer token reached the upstream: %q", a)
	}
	echoes(t, conn)

	// A bad token is the client's to hear: 401 invalid_token.
	conn, resp, body = wsDial(t, e, "/api/ws/echo", http.Header{"Authorization": {"Bearer not-a-token"}})
	if conn != nil || resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"invalid_token"`) {
		t.Errorf("a forged bearer token: %d %q, want 401 invalid_token", resp.StatusCode, body)
	}
}

// TestWebSocketRefusals: no session is 401 JSON even on a page route,
// where a page load is redirected to the login; a deny route is 403;
// neither reaches the upstream.
func TestWebSocketRefusals(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	for _, path := range []string{"/ws/echo", "/api/ws/echo", "/profile/ws"} {
		conn, resp, body := wsDial(t, e, path, nil)
		if conn != nil {
			t.Fatalf("%s: a WebSocket without a session was opened", path)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(body), &m)
		if resp.StatusCode != http.StatusUnauthorized || m["error"] != "login_required" || resp.Header.Get("Location") != "" {
			t.Errorf("%s without a session: %d Location %q %q, want 401 login_required, no redirect", path, resp.StatusCode, resp.Header.Get("Location"), body)
		}
		if u, _ := m["login_url"].(string); !strings.HasPrefix(u, "/_wxgate/start?rd=") {
			t.Errorf("%s: login_url %q", path, u)
		}
	}
	// The same page loaded normally still goes to the login.
	if loc := e.browser(weChatUA).expectRedirect("/ws/echo"); !strings.Contains(loc, "/_wxgate/start") {
		t.Errorf("a page load without a session went to %s, want the login", loc)
	}
	b := e.browser(weChatUA)
	b.login("/", "alice")
	conn, resp, body := wsDial(t, e, "/denied/ws", b.cookieHeader())
	if conn != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
		t.Errorf("deny route: %d %q, want 403 forbidden", resp.StatusCode, body)
	}
	if n := up.requests.Load(); n != 0 {
		t.Errorf("the upstream received %d requests; refused handshakes must not reach it", n)
	}
}

// TestWebSocketUpstreamFailures: an upstream that refuses the upgrade is
// heard as it answered; one down is 502; one that never answers the
// handshake is 504 within its timeout.
func TestWebSocketUpstreamFailures(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	conn, resp, body := wsDial(t, e, "/public/refuse", nil)
	if conn != nil || resp.StatusCode != http.StatusForbidden || body != "no websockets here\n" {
		t.Errorf("upstream refusing: %d %q, want its own 403", resp.StatusCode, body)
	}
	// The client's connection serves on after the refusal.
	if got := e.browser(weChatUA).upstreamView("/public/after", nil); got.URI != "/public/after" {
		t.Errorf("after a refusal: %+v", got)
	}
	conn, resp, body = wsDial(t, e, "/down/ws", nil)
	if conn != nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"upstream_down"`) {
		t.Errorf("upstream down: %d %q, want 502 upstream_down", resp.StatusCode, body)
	}
	start := time.Now()
	conn, resp, body = wsDial(t, e, "/slow/ws", nil)
	if conn != nil || resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, `"upstream_timeout"`) {
		t.Errorf("upstream hanging on the handshake: %d %q, want 504 upstream_timeout", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the 504 took %s; the upstream's timeout is 300ms", d)
	}
}

// TestWebSocketEnds: either side closing ends the other.
func TestWebSocketEnds(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})

	// The upstream says bye and closes its TCP connection.
	conn, resp, body := wsDial(t, e, "/public/close", nil)
	if conn == nil {
		t.Fatalf("handshake: %d %q", resp.StatusCode, body)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := conn.ReadMessage(); err != nil || string(msg) != "bye" {
		t.Fatalf("first message %q, %v; want bye", msg, err)
	}
	if _, _, err := conn.ReadMessage(); err == nil || isTimeoutErr(err) {
		t.Errorf("after the upstream closed: %v, want the connection closed", err)
	}

	// The client vanishes mid-stream: the upstream's socket ends.
	conn, resp, body = wsDial(t, e, "/public/echo", nil)
	if conn == nil {
		t.Fatalf("handshake: %d %q", resp.StatusCode, body)
	}
	echoes(t, conn)
	<-up.ended // the /close socket's
	conn.NetConn().Close()
	select {
	case <-up.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's socket stayed open after the client's connection closed")
	}
	waitUntil(t, "wxgate_websockets_open to drop to 0", func() bool {
		return strings.Contains(e.scrape(), `wxgate_websockets_open{upstream="app"} 0`)
	})
}

// TestWebSocketRawHandshakes speaks the handshake in raw bytes: frames
// sent in the same packet as the handshake are delivered; a handshake
// with a body, or not a GET, is refused before the upstream; other
// upgrades pass as ordinary requests without Upgrade.
func TestWebSocketRawHandshakes(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	addr := strings.TrimPrefix(e.url, "http://")
	const hs = "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

	// Handshake and a masked text frame "hi" in one write.
	c := dialRaw(t, addr)
	frame := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	if _, err := c.Write(append([]byte(hs+"\r\n"), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || resp.Header.Get("Content-Length") != "" {
		t.Errorf("101 headers %v", resp.Header)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, []byte{0x81, 2, 'h', 'i'}) {
		t.Errorf("echo of the frame sent with the handshake: %q %v", got, err)
	}
	c.Close()

	before := up.requests.Load()
	for name, req := range map[string]string{
		"Content-Length": hs + "Content-Length: 8\r\n\r\n" + string(frame),
		"chunked":        hs + "Transfer-Encoding: chunked\r\n\r\n8\r\n" + string(frame) + "\r\n0\r\n\r\n",
		"POST":           strings.Replace(hs, "GET", "POST", 1) + "\r\n",
	} {
		c := dialRaw(t, addr)
		fmt.Fprint(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "invalid_request") {
			t.Errorf("a WebSocket handshake with %s: %d %q, want 400", name, resp.StatusCode, b)
		}
		c.Close()
	}
	if n := up.requests.Load() - before; n != 0 {
		t.Errorf("%d refused handshakes reached the upstream", n)
	}

	// h2c is not tunnelled: the upstream gets a plain GET.
	c = dialRaw(t, addr)
	fmt.Fprint(c, "GET /public/h2c HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var view echo
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil || resp.StatusCode != 200 {
		t.Fatalf("h2c upgrade: %d %v", resp.StatusCode, err)
	}
	for _, h := range []string{"Upgrade", "Connection", "Http2-Settings"} {
		if v, ok := view.Headers[h]; ok {
			t.Errorf("the upstream received %s: %q", h, v)
		}
	}
	c.Close()
}

// TestWebSocketShutdown: Shutdown waits for open WebSockets, which still
// carry messages, and closes them at its deadline.
func TestWebSocketShutdown(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	conn, resp, body := wsDial(t, e, "/public/echo", nil)
	if conn == nil {
		t.Fatalf("handshake: %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.gw.Shutdown(ctx) }()
	echoes(t, conn)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a WebSocket open before its deadline", err)
	default:
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); err == nil || isTimeoutErr(err) {
		t.Errorf("at the shutdown's deadline: %v, want the socket closed", err)
	}
	select {
	case <-shut:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	select {
	case <-up.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's socket stayed open after Shutdown")
	}
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// waitUntil polls cond until it holds, failing after 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebSocketUpstreamLies: an upstream that answers the handshake with a
// switch to another protocol, or with bytes that are not HTTP, is a 502;
// the client's socket is never opened.
func TestWebSocketUpstreamLies(t *testing.T) {
	for name, answer := range map[string]string{
		"101 to h2c": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
		// A 101 that no WebSocket server sent, then HTTP on the tunnel.
		"101 without the accept":        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"101 with another key's accept": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
		"not HTTP":                      "SSH-2.0-OpenSSH_9.6\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						br := bufio.NewReader(c)
						if _, err := http.ReadRequest(br); err != nil {
							return
						}
						_, _ = io.WriteString(c, answer)
						_, _ = io.Copy(io.Discard, br)
					}()
				}
			}()
			e := newEnvOpts(t, envOptions{appUpstream: "http://" + ln.Addr().String()})
			conn, resp, body := wsDial(t, e, "/public/ws", nil)
			if conn != nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"upstream_down"`) {
				t.Errorf("%d %q, want 502 upstream_down", resp.StatusCode, body)
			}
		})
	}
}

// TestWebSocketOrigin: a page of another site cannot open a WebSocket with
// the user's session cookie (cross-site WebSocket hijacking); the
// gateway's own origin and allowed_redirect_hosts can. Bearer tokens and
// public routes carry no ambient identity and pass whatever the Origin.
func TestWebSocketOrigin(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	b := e.browser(weChatUA)
	b.login("/", "alice")
	withOrigin := func(h http.Header, origin string) http.Header {
		h = h.Clone()
		h.Set("Origin", origin)
		return h
	}
	for origin, open := range map[string]bool{
		e.url:                              true,
		"http://good.example.com":          true, // allowed_redirect_hosts
		"http://x.trusted.example":         true,
		"":                                 true, // no browser
		"http://evil.example":              false,
		"null":                             false,
		"http://good.example.com.evil.com": false,
		"https://good.example.com:8443":    false,
		strings.Replace(e.url, "127.0.0.1", "localhost", 1): false,
	} {
		before := up.handshakes.Load()
		conn, resp, body := wsDial(t, e, "/ws/echo", withOrigin(b.cookieHeader(), origin))
		if open {
			if conn == nil {
				t.Errorf("Origin %q with the cookie: %d %q, want 101", origin, resp.StatusCode, body)
				continue
			}
			echoes(t, conn)
			conn.Close()
			continue
		}
		if conn != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
			t.Errorf("Origin %q with the cookie: %d %q, want 403 forbidden", origin, resp.StatusCode, body)
		}
		if up.handshakes.Load() != before {
			t.Errorf("Origin %q: the refused handshake reached the upstream", origin)
		}
	}
	pair := e.api().mpLogin("dora")
	bearer := http.Header{"Authorization": {"Bearer " + pair["access_token"].(string)}}
	if conn, resp, body := wsDial(t, e, "/api/ws/echo", withOrigin(bearer, "http://evil.example")); conn == nil {
		t.Errorf("a bearer token from another origin: %d %q, want 101", resp.StatusCode, body)
	}
	if conn, resp, body := wsDial(t, e, "/public/ws", withOrigin(b.cookieHeader(), "http://evil.example")); conn == nil {
		t.Errorf("a public route from another origin: %d %q, want 101", resp.StatusCode, body)
	}
}

// TestWebSocketShutdownStalledClient: a client that reads nothing while
// its upstream floods the socket (the gateway's copy to it blocked on a
// full window) neither grows the gateway's memory nor holds Shutdown past
// its deadline, and Shutdown closes both sides of its tunnel: nothing of
// the tunnel runs on after it, holding the client's connection for as
// long as the client stays silent.
func TestWebSocketShutdownStalledClient(t *testing.T) {
	addr, flooding, _ := floodingUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: "http://" + addr})
	silentHandshake(t, e)
	select {
	case <-flooding:
		t.Fatal("the upstream wrote 64 MiB to a client that reads nothing: the gateway buffers them")
	case <-time.After(time.Second):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %s; its deadline was 300ms", d)
	}
	waitTunnelsStopped(t)
}

// TestWebSocketLimits: past max_websockets_per_client a client's handshake
// gets 429 and past max_websockets anyone's gets 503, both with
// Retry-After and before the upstream is asked; a WebSocket that ends
// gives its place back.
func TestWebSocketLimits(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL, serverKeys: `
trusted_proxies = ["127.0.0.1"]
max_websockets = 3
max_websockets_per_client = 2`})
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	a1, _, _ := wsDial(t, e, "/public/ws", from("192.0.2.1"))
	a2, _, _ := wsDial(t, e, "/public/ws", from("192.0.2.1"))
	b1, _, _ := wsDial(t, e, "/public/ws", from("198.51.100.2")) // another /24
	if a1 == nil || a2 == nil || b1 == nil {
		t.Fatal("the first three WebSockets were refused")
	}
	asked := up.handshakes.Load()
	// 192.0.2.1 holds its two: a third is refused.
	if conn, resp, body := wsDial(t, e, "/public/ws", from("192.0.2.1")); conn != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a client's third WebSocket: %v %q, want 429 with Retry-After", resp.Status, body)
	}
	// The replica holds three: a fourth client is refused too.
	if conn, resp, body := wsDial(t, e, "/public/ws", from("203.0.113.7")); conn != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a WebSocket past max_websockets: %v %q, want 503 with Retry-After", resp.Status, body)
	}
	if n := up.handshakes.Load(); n != asked {
		t.Errorf("the upstream saw %d handshakes of refused WebSockets", n-asked)
	}
	// Ending one gives its place back, to its client and to the replica.
	a1.Close()
	<-up.ended
	var again *websocket.Conn
	waitUntil(t, "the ended WebSocket's place to come back", func() bool {
		again, _, _ = wsDial(t, e, "/public/ws", from("192.0.2.1"))
		return again != nil
	})
	echoes(t, again)
}

// TestWebSocketsNotExhaustedByOneIPv6Customer: one customer with an IPv6
// /48 (a /56 is what many providers hand a home) opens WebSockets from
// many /64s, each under max_websockets_per_client. Its network may hold a
// tenth of max_websockets (at least the per-client bound): before, 20
// /64s took every WebSocket of the replica and everyone else got 503.
func TestWebSocketsNotExhaustedByOneIPv6Customer(t *testing.T) {
	up := newWSUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL, serverKeys: `
trusted_proxies = ["127.0.0.1"]
max_websockets = 20
max_websockets_per_client = 1`})
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	admitted := 0
	for n := 0; n < 20; n++ {
		conn, resp, _ := wsDial(t, e, "/public/ws", from(fmt.Sprintf("2001:db8:1:%x::1", n)))
		switch {
		case conn != nil:
			admitted++
		case resp.StatusCode != http.StatusTooManyRequests:
			t.Fatalf("a WebSocket past the network's share: %v, want 429", resp.Status)
		}
	}
	if admitted != 2 {
		t.Errorf("one /48 opened %d WebSockets, want 2 (a tenth of max_websockets)", admitted)
	}
	if conn, resp, body := wsDial(t, e, "/public/ws", from("198.51.100.7")); conn == nil {
		t.Errorf("another client's WebSocket: %v %q: one IPv6 /48 took them all", resp.Status, body)
	}
}

// TestWebSocketStalledPeer: a client that stops reading while the
// upstream keeps sending ends its WebSocket after websocket_write_timeout,
// upstream connection and all, instead of holding it for ever.
func TestWebSocketStalledPeer(t *testing.T) {
	addr, _, upstreamDone := floodingUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: "http://" + addr, serverKeys: `websocket_write_timeout = "1s"`})
	silentHandshake(t, e)
	// The client reads nothing. Once the buffers on the way are full the
	// gateway's write to it blocks, and a second later the tunnel ends:
	// the upstream's write fails.
	select {
	case err := <-upstreamDone:
		if err == nil {
			t.Error("the upstream's side ended without an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the tunnel to a client that reads nothing is still open after 30s (websocket_write_timeout 1s)")
	}
	waitTunnelsStopped(t)
}

// floodingUpstream is a WebSocket upstream that, once a handshake is
// done, writes 64 KiB frames as fast as it may. flooding gets a value
// once 64 MiB are written (past what the sockets' buffers on the way
// hold); done gets the error that ended the writing.
func floodingUpstream(t *testing.T) (addr string, flooding <-chan struct{}, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fl, dn := make(chan struct{}, 1), make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
				frame := append([]byte{0x82, 126, 0xff, 0xff}, make([]byte, 0xffff)...)
				for i := 0; ; i++ {
					if i == 1024 {
						select {
						case fl <- struct{}{}:
						default:
						}
					}
					if _, err := c.Write(frame); err != nil {
						select {
						case dn <- err:
						default:
						}
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), fl, dn
}

// silentHandshake opens a WebSocket on /public/ws through e on a raw
// connection that then reads nothing.
func silentHandshake(t *testing.T, e *env) {
	t.Helper()
	c := dialRaw(t, strings.TrimPrefix(e.url, "http://"))
	fmt.Fprint(c, "GET /public/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
}

// waitTunnelsStopped waits until no goroutine runs a tunnel: nothing of
// one runs on after it ended.
func waitTunnelsStopped(t *testing.T) {
	t.Helper()
	waitUntil(t, "the tunnel to stop running", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "proxy.(*tunnel).run")
	})
}
