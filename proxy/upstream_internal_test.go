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
	"syscall"
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
	up := provisionedUpstream(t, Upstream{Name: "tls", URL: srv.URL, Timeout: 5 * time.Second, KeepAliveIdle: 4 * time.Second})
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

// scriptedConn is an upstream connection whose exchanges follow a script:
// writes succeed until failAt (counted over the connection's life), which
// fails with a reset; reads give answer once per exchange, then EOF.
type scriptedConn struct {
	net.Conn // nil: only the methods below are called
	failAt   int
	writes   int
	answer   []string
	pending  bytes.Buffer
}

func (c *scriptedConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes == c.failAt {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	}
	if c.pending.Len() == 0 && len(c.answer) > 0 {
		c.pending.WriteString(c.answer[0])
		c.answer = c.answer[1:]
	}
	return len(b), nil
}

func (c *scriptedConn) Read(b []byte) (int, error) {
	if c.pending.Len() == 0 {
		return 0, io.EOF
	}
	return c.pending.Read(b)
}

func (c *scriptedConn) Close() error                     { return nil }
func (c *scriptedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

// TestUpstreamPartlySentNoReplay: a POST whose head went out on a pooled
// connection that then reset, before any answer, is not sent again: the
// upstream may have read it and acted on it. Only a request none of whose
// bytes went out may go again whatever its method.
func TestUpstreamPartlySentNoReplay(t *testing.T) {
	up := provisionedUpstream(t, Upstream{Name: "app", URL: "http://127.0.0.1:1", Timeout: 5 * time.Second, KeepAliveIdle: 4 * time.Second})
	for _, tc := range []struct {
		name   string
		failAt int // the write that fails, counted from the first request's
		replay bool
	}{
		// The first request takes one write; the POST's head and body
		// take two.
		{name: "nothing of the POST sent", failAt: 2, replay: true},
		{name: "the POST's head sent", failAt: 3, replay: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scriptedConn{failAt: tc.failAt, answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}}
			up.hc = up.client(up.hc.Addr)
			up.hc.Dial = func(string) (net.Conn, error) { return newUpstreamConn(sc, sc, up), nil }
			var fresh atomic.Int64
			up.fresh = up.client(up.hc.Addr)
			up.fresh.Dial = func(string) (net.Conn, error) {
				fresh.Add(1)
				return nil, errors.New("no fresh connection in this test")
			}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + up.hc.Addr + "/")
			if err := up.hc.Do(req, resp); err != nil || readAnswer(resp, "rid") != nil || string(resp.Body()) != "ok" {
				t.Fatalf("first GET = %d %q %v", resp.StatusCode(), resp.Body(), err)
			}
			req.SetRequestURI("http://" + up.hc.Addr + "/pay")
			req.Header.SetMethod("POST")
			req.SetBody(bytes.Repeat([]byte("x"), 8<<10)) // more than the 4 KiB write buffer
			err := up.hc.Do(req, resp)
			if err == nil {
				t.Fatal("the POST did not fail")
			}
			_ = up.resend(req, resp, nil, len(req.Body()), err)
			if got := fresh.Load() == 1; got != tc.replay {
				t.Errorf("sent again: %v, want %v (%d writes)", got, tc.replay, sc.writes)
			}
		})
	}
}

// provisionedUpstream is u's pool, its URL parsed as Provision does.
func provisionedUpstream(t *testing.T, u Upstream) *upstream {
	t.Helper()
	if err := u.provision(); err != nil {
		t.Fatal(err)
	}
	return newUpstream(u, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(nil))
}
