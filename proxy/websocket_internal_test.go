package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"
)

// TestWebSocketHandshakeTLS: a WebSocket to an https upstream does its TLS
// handshake on a connection of its own and speaks frames after the 101;
// an upstream's refusal is read whole, up to maxRefusal.
func TestWebSocketHandshakeTLS(t *testing.T) {
	upgrader := websocket.Upgrader{}
	up, _, _ := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, strings.Repeat("x", maxRefusal+1))
			return
		}
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		kind, msg, err := c.ReadMessage()
		if err == nil {
			_ = c.WriteMessage(kind, msg)
		}
	})
	shake := func(path string) (*fasthttp.Response, []byte, error) {
		conn, err := up.dialTunnel()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		req, resp := fasthttp.AcquireRequest(), &fasthttp.Response{}
		defer fasthttp.ReleaseRequest(req)
		req.SetRequestURI("https://" + up.hc.Addr + path)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		br, err := handshake(conn, req, resp, time.Second)
		if err != nil {
			return nil, nil, err
		}
		if _, err := conn.Write([]byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}); err != nil {
			return resp, nil, err
		}
		got := make([]byte, 4)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(br, got)
		return resp, got, err
	}
	resp, got, err := shake("/ws")
	if err != nil || resp.StatusCode() != http.StatusSwitchingProtocols || !bytes.Equal(got, []byte{0x81, 2, 'h', 'i'}) {
		t.Errorf("over TLS: %v %q %v; want 101 and the frame echoed", resp, got, err)
	}
	if _, _, err := shake("/big"); !errors.Is(err, fasthttp.ErrBodyTooLarge) {
		t.Errorf("a refusal over %d bytes: %v, want ErrBodyTooLarge", maxRefusal, err)
	}
}
