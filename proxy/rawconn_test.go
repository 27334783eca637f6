package proxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawConn is one client connection to the gateway that writes exactly the
// bytes a test gives it, so framing, header spellings and keep-alive reuse
// are what the test says and not what net/http would make of them.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dial opens a raw connection to the gateway's public listener.
func (e *env) dial() *rawConn {
	e.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawConn{t: e.t, conn: c, r: bufio.NewReader(c)}
}

// send writes raw and reads one response, its body read whole. It returns
// nil when the connection ends before a response.
func (rc *rawConn) send(raw string) (*http.Response, string) {
	rc.t.Helper()
	_ = rc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.conn, raw); err != nil {
		return nil, ""
	}
	return rc.read()
}

// sendHalfClosed writes raw, closes the sending side (the client stops,
// as one cut off in the middle of a body does) and reads one response.
func (rc *rawConn) sendHalfClosed(raw string) (*http.Response, string) {
	rc.t.Helper()
	_ = rc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.conn, raw); err != nil {
		return nil, ""
	}
	_ = rc.conn.(*net.TCPConn).CloseWrite()
	return rc.read()
}

// read reads one response; nil when the connection ended first.
func (rc *rawConn) read() (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		return nil, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the gateway closed the connection: a read finds
// EOF (or a reset) instead of another response.
func (rc *rawConn) closed() bool {
	_ = rc.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := rc.r.ReadByte()
	if err == nil {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}
