package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/metrics"
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

// TestTunnelEndsWhenFasthttpClosesInstead: a tunnel whose client
// connection fasthttp closes instead of handing it over (a write to a
// client that went away) ends with it, its upstream connection closed,
// rather than staying open until Shutdown.
func TestTunnelEndsWhenFasthttpClosesInstead(t *testing.T) {
	m := metrics.New(nil)
	set := newTunnelSet(m, 10, 1, time.Minute)
	client, _ := net.Pipe()
	up, upPeer := net.Pipe()
	dc := &drainConn{Conn: client, conns: newConnSet()}
	dc.conns.add(dc)
	place, err := set.reserve(netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	tun := set.open("app", place, up, bufio.NewReader(up))
	dc.tunnel.Store(tun)
	trackConnState(dc, fasthttp.StateHijacked) // not this one: nothing happens
	if set.count() != 1 {
		t.Fatalf("%d tunnels open after StateHijacked, want 1", set.count())
	}
	trackConnState(dc, fasthttp.StateClosed)
	if set.count() != 0 {
		t.Errorf("%d tunnels open after fasthttp closed the connection, want 0", set.count())
	}
	_ = upPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := upPeer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the upstream's side: %v, want it closed", err)
	}
	select {
	case <-tun.done:
	default:
		t.Error("the tunnel is not done")
	}
	// Its place is free again: the client's one allowed tunnel.
	if _, err := set.reserve(netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("reserve after the tunnel ended: %v", err)
	}
}

// trickleConn is a peer that takes per bytes of each write before the
// write's deadline passes: a client reading slowly (per > 0) or not at
// all (per == 0).
type trickleConn struct {
	net.Conn // unused: only writes are made
	per      int
	got      bytes.Buffer
}

func (c *trickleConn) SetWriteDeadline(time.Time) error { return nil }

func (c *trickleConn) Write(p []byte) (int, error) {
	n := min(len(p), c.per)
	c.got.Write(p[:n])
	if n < len(p) {
		return n, os.ErrDeadlineExceeded
	}
	return n, nil
}

// TestCopyTimedSlowReader: websocket_write_timeout ends a tunnel whose
// peer takes nothing for that long, not one whose peer reads slowly. The
// kernel wakes a blocked write only when a third of the send buffer is
// free, so one write to a client reading 400 KB/s outlasted a 1s timeout
// over loopback and cut the message short.
func TestCopyTimedSlowReader(t *testing.T) {
	msg := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	for _, tc := range []struct {
		name    string
		per     int
		wantErr bool
	}{
		{"slow reader", 1000, false},
		{"fast reader", len(msg), false},
		{"stalled", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := &trickleConn{per: tc.per}
			err := copyTimed(dst, bytes.NewReader(msg), time.Second)
			if err == io.EOF {
				err = nil
			}
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("copyTimed: %v (after %d of %d bytes), want an error: %v", err, dst.got.Len(), len(msg), tc.wantErr)
			}
			if !tc.wantErr && !bytes.Equal(dst.got.Bytes(), msg) {
				t.Errorf("the peer got %d of %d bytes", dst.got.Len(), len(msg))
			}
		})
	}
}
