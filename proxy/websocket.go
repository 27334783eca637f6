package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// WebSockets (issue 11 item 5). An upgrade to "websocket" on a route that
// allows the request is judged once, like any request (cookie or bearer
// token), and its handshake goes to the upstream with the same headers a
// proxied request gets; when the upstream switches protocols, wxgate takes
// the client's connection from fasthttp and copies bytes both ways until
// either side closes (tunnel.run). A login route without a caller answers
// 401 JSON, never the login redirect: a WebSocket client cannot follow it.
//
// Other upgrades (h2c, TLS/1.0, ...) are not tunnelled: Upgrade and
// Connection are hop-by-hop, so the request goes on without them as an
// ordinary request, and an upstream that still answers 101 gets a 502
// (errSwitchedUnasked). An h2c upgrade through a proxy that passes it on
// reaches the upstream's HTTP/2 side past the proxy's routing.

// errUpgradeBody refuses a WebSocket handshake that carries a body or is
// not a GET (RFC 6455 section 4.1): after a 101 the bytes of a body would
// reach the upstream as WebSocket frames, the smuggling a tunnel invites.
var errUpgradeBody = errors.New("proxy: a WebSocket upgrade must be a GET without a body")

// errUpgradeRefused is an upstream answering a WebSocket handshake with
// 101 to another protocol.
var errUpgradeRefused = errors.New("proxy: the upstream switched to a protocol other than websocket")

// errNotWebSocket is a 101 without the Sec-WebSocket-Accept of the
// client's key (RFC 6455 section 4.2.2): no WebSocket server sent it. An
// upstream that switches without one may go on speaking HTTP, and the
// tunnel would carry the client's requests to it past every route
// (WebSocket smuggling).
var errNotWebSocket = errors.New("proxy: the upstream's 101 lacks the Sec-WebSocket-Accept of the client's key")

// acceptKey is the Sec-WebSocket-Accept answering key.
func acceptKey(key []byte) string {
	h := sha1.New()
	h.Write(trimOWS(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// maxRefusal bounds the body of an upstream's non-101 answer to a
// handshake, which is read whole: such answers are error pages.
const maxRefusal = streamAbove

// webSocketUpgrade reports whether h asks for a WebSocket: HTTP/1.1,
// "Upgrade: websocket" and "upgrade" among the Connection options. It
// refuses such a request that is not a bodiless GET.
func webSocketUpgrade(h *fasthttp.RequestHeader) (bool, error) {
	up := h.Peek(fiber.HeaderUpgrade)
	if len(up) == 0 {
		return false, nil
	}
	if !equalFold(trimOWS(up), "websocket") || !hasToken(h.Peek(fiber.HeaderConnection), "upgrade") || !h.IsHTTP11() {
		return false, nil
	}
	// ContentLength: -1 chunked, a body's length, or 0 or -2 without one.
	if n := h.ContentLength(); !h.IsGet() || n > 0 || n == -1 || len(h.Peek(fiber.HeaderTransferEncoding)) > 0 {
		return true, errUpgradeBody
	}
	return true, nil
}

// askedWebSocket reports whether a forward-auth question is about a
// WebSocket handshake. Proxies drop the hop-by-hop Upgrade from the
// question (nginx, Traefik) but pass Sec-WebSocket-Key, which browsers
// send on handshakes only and no page's script can set.
func askedWebSocket(h *fasthttp.RequestHeader) bool {
	return len(h.Peek(fiber.HeaderSecWebSocketKey)) > 0 || equalFold(trimOWS(h.Peek(fiber.HeaderUpgrade)), "websocket")
}

// hasToken reports whether the comma-separated list v holds the lowercase
// token tok, ignoring case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if equalFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}

// webSocketOrigin reports whether the page that opens a WebSocket may use
// the session cookie: WebSockets are outside the same-origin policy, and
// browsers send the cookie (SameSite=Lax) on a handshake from any page of
// the same site, another subdomain's included, which could then talk to
// the app as the user (cross-site WebSocket hijacking). The page must be
// of the public URL's origin, the request's own, or an
// allowed_redirect_hosts origin. Browsers send Origin on every handshake;
// a client that sends none is no browser, and its cookie is its own.
func (s *Server) webSocketOrigin(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return true
	}
	if s.ownOrigin(c, origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.User == nil && u.Opaque == "" &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == "" && s.allowedOrigin(u)
}

// tunnelTo sends the WebSocket handshake in c, its headers already
// prepared by forward, to up on a connection of its own. On a 101 it
// takes the client's connection from fasthttp and tunnels it to the
// upstream's; any other answer goes back to the client as the answer to
// the request.
func (s *Server) tunnelTo(c *fiber.Ctx, up *upstream) error {
	client, err := s.tunnels.reserve(requestOf(c).client)
	switch {
	case errors.Is(err, errTunnelsOfClient), errors.Is(err, errTunnelsOfNetwork):
		return tooManyWebSockets(err)
	case err != nil:
		return webSocketsFull(err)
	}
	opened := false
	defer func() {
		if !opened {
			s.tunnels.release(client)
		}
	}()
	req := c.Request()
	req.Header.Set(fiber.HeaderConnection, "Upgrade")
	req.Header.Set(fiber.HeaderUpgrade, "websocket")
	req.URI().DisablePathNormalizing = true
	start := time.Now()
	conn, err := up.dialTunnel()
	if err == nil {
		var br *bufio.Reader
		if br, err = handshake(conn, req, c.Response(), up.timeout); err == nil {
			opened, err = s.answerHandshake(c, up, client, conn, br)
		}
		if err != nil || c.Response().StatusCode() != fasthttp.StatusSwitchingProtocols {
			conn.Close()
		}
	}
	took := time.Since(start)
	if err != nil {
		outcome := "error"
		if isTimeout(err) {
			outcome = "timeout"
		}
		s.metrics.Upstream(up.name, outcome, took)
		return upstreamError(up.name, fmt.Errorf("websocket handshake: %w", err))
	}
	s.metrics.Upstream(up.name, "ok", took)
	return nil
}

// handshake writes req on conn and reads the answer's head into resp, and
// its body unless it is a 101, all within timeout. It returns the reader
// that holds whatever the upstream sent after the head.
func handshake(conn net.Conn, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) (*bufio.Reader, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(conn, 4<<10)
	if err := req.Write(bw); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 4<<10)
	if err := resp.ReadLimitBody(br, maxRefusal); err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return br, nil
}

// answerHandshake answers the client with the upstream's answer in c's
// response. A 101 to websocket hijacks the client's connection: its head
// is written by the tunnel, before the first byte either way. It reports
// whether a tunnel opened in client's reserved place.
func (s *Server) answerHandshake(c *fiber.Ctx, up *upstream, client tunnelPlace, conn net.Conn, br *bufio.Reader) (bool, error) {
	resp := c.Response()
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		removeHopByHop(&resp.Header)
		return false, nil
	}
	if !equalFold(trimOWS(resp.Header.Peek(fiber.HeaderUpgrade)), "websocket") {
		return false, errUpgradeRefused
	}
	key := c.Request().Header.Peek(fiber.HeaderSecWebSocketKey)
	if len(key) == 0 || string(resp.Header.Peek(fiber.HeaderSecWebSocketAccept)) != acceptKey(key) {
		return false, errNotWebSocket
	}
	removeHopByHop(&resp.Header)
	resp.Header.Set(fiber.HeaderConnection, "Upgrade")
	resp.Header.Set(fiber.HeaderUpgrade, "websocket")
	resp.Header.SetNoDefaultContentType(true)
	// Copied: the response is fasthttp's, reused once the handler returns.
	head := bytes.Clone(resp.Header.Header())
	t := s.tunnels.open(up.name, client, conn, br)
	ctx := c.Context()
	if dc := drainConnOf(ctx.Conn()); dc != nil {
		dc.tunnel.Store(t)
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) { t.run(client, head) })
	return true, nil
}
