package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/metrics"
)

// tlsUpstream starts an https upstream serving h and returns an upstream
// for it that trusts its certificate, and a count of its connections.
func tlsUpstream(t *testing.T, h http.HandlerFunc) (*upstream, *httptest.Server, *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	up, err := newUpstream(Upstream{Name: "tls", URL: srv.URL, Timeout: 5 * time.Second, KeepAliveIdle: 4 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	up.tls.RootCAs = roots
	up.tls.ServerName = "example.com" // in httptest's certificate
	return up, srv, &conns
}

// get sends GET / through up's pool, as forward does, and reads the answer.
func get(t *testing.T, up *upstream) (int, string, error) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("https://" + up.hc.Addr + "/")
	err := up.hc.Do(req, resp)
	if err != nil {
		err = up.resend(req, resp, nil, 0, err)
	}
	if err == nil {
		err = readAnswer(resp, "rid")
	}
	if err != nil {
		return 0, "", err
	}
	if resp.BodyStream() == nil { // read whole
		return resp.StatusCode(), string(resp.Body()), nil
	}
	body, err := io.ReadAll(resp.BodyStream())
	return resp.StatusCode(), string(body), err
}

// TestUpstreamTLS: over https the connection is followed above TLS: reused
// while open, sent again after the upstream closed it, and an answer cut
// by a close_notify at a chunk boundary is an error, not an end of body.
func TestUpstreamTLS(t *testing.T) {
	cut := false
	up, srv, conns := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if cut {
			_, _ = io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // closes the connection, close_notify first
		}
		_, _ = io.WriteString(w, "ok")
	})
	for i := range 2 {
		if code, body, err := get(t, up); code != 200 || body != "ok" || err != nil {
			t.Fatalf("GET #%d = %d %q %v, want 200 ok", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests, want 1", n)
	}
	srv.CloseClientConnections()
	if code, body, err := get(t, up); code != 200 || body != "ok" || err != nil {
		t.Fatalf("GET after the upstream closed = %d %q %v, want 200 ok", code, body, err)
	}
	cut = true
	_, body, err := get(t, up)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut answer read as %q, %v; want io.ErrUnexpectedEOF", body, err)
	}
	if !strings.Contains(body, "hello") && body != "" {
		t.Errorf("cut answer body %q", body)
	}
}

// coalescedConn passes writes through, or, while held, keeps them and sends
// them in one write on flush: TLS records that arrive in one segment.
type coalescedConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  bytes.Buffer
}

func (c *coalescedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		return c.buf.Write(b)
	}
	return c.Conn.Write(b)
}

func (c *coalescedConn) setHold() {
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
}

func (c *coalescedConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	_, err := c.Conn.Write(c.buf.Bytes())
	c.buf.Reset()
	return err
}

// TestUpstreamTLSUnaskedRecord: an https upstream that sends an unasked
// answer right behind its first one, in the same segment, must not have
// it read as the next request's answer. crypto/tls takes both records off
// the socket at once, so the peek finds the socket empty; the unasked
// answer would go to the next user.
func TestUpstreamTLSUnaskedRecord(t *testing.T) {
	up, srv, _ := tlsUpstream(t, nil)
	cfg := srv.TLS.Clone()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				hc := &coalescedConn{Conn: raw}
				c := tls.Server(hc, cfg)
				defer c.Close()
				r := bufio.NewReader(c)
				for i := 0; ; i++ {
					if _, err := http.ReadRequest(r); err != nil {
						return
					}
					hc.setHold()
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if i == 0 {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot yours")
					}
					if hc.flush() != nil {
						return
					}
				}
			}()
		}
	}()
	up.hc.Addr, up.fresh.Addr = ln.Addr().String(), ln.Addr().String()
	for i := range 3 {
		if code, body, err := get(t, up); code != 200 || body != "ok" || err != nil {
			t.Errorf("GET #%d = %d %q %v, want 200 ok", i, code, body, err)
		}
	}
}

func TestKeepAliveTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"timeout=5", 4 * time.Second, true},
		{"timeout=5, max=1000", 4 * time.Second, true},
		{"max=100, Timeout=75", 74 * time.Second, true},
		{"timeout=1", 500 * time.Millisecond, true},
		{"timeout=0", 0, true},
		{"timeout=", 0, false},
		{"timeout=5s", 0, false},
		{"max=5", 0, false},
		{"", 0, false},
	} {
		got, ok := keepAliveTimeout([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("keepAliveTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
