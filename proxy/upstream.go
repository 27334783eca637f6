package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/metrics"
)

// upstream is one [[upstream]] and its connection pool.
type upstream struct {
	// conf is the [[upstream]] it was built from: a reload keeps the
	// upstream (and its pool) while its keys stay the same.
	conf    Upstream
	name    string
	scheme  string // "http" or "https"
	hc      *fasthttp.HostClient
	timeout time.Duration // [[upstream]] timeout
	idle    time.Duration // [[upstream]] keepalive_idle
	// fresh sends a request again, once, on a connection of its own that
	// it closes after the answer: the pooled one it went to had closed
	// (issue 9). Its connections never reach hc's pool.
	fresh *fasthttp.HostClient
	// tls is the https upstream's client config, nil for http. wxgate
	// does the handshake itself, so that upstreamConn sits above TLS and
	// sees the HTTP bytes (and TLS's end of stream) rather than records.
	tls     *tls.Config
	log     *slog.Logger
	metrics *metrics.Metrics
}

// newUpstream builds u's connection pool from the URL Provision parsed.
func newUpstream(u Upstream, log *slog.Logger, m *metrics.Metrics) *upstream {
	up := &upstream{conf: u, name: u.Name, scheme: u.scheme, timeout: u.Timeout, idle: u.KeepAliveIdle, log: log, metrics: m}
	if u.scheme == "https" {
		up.tls = &tls.Config{ServerName: u.host, ClientSessionCache: tls.NewLRUClientSessionCache(0)}
	}
	up.hc = up.client(u.addr)
	up.fresh = up.client(u.addr)
	return up
}

// retire lets go of an upstream a reload replaced or removed: its idle
// connections close now; those carrying a request finish it, go back to
// the pool and close once idle for keepalive_idle, as pooled ones always
// do. A request that took the old routes just before the reload can still
// use it: the pool dials again.
func (u *upstream) retire() {
	u.hc.CloseIdleConnections()
	u.fresh.CloseIdleConnections()
}

// dial opens a connection to the upstream, with its TLS handshake done
// for https.
func (u *upstream) dial(addr string) (net.Conn, error) {
	c, raw, err := u.connect(addr)
	if err != nil {
		return nil, err
	}
	return newUpstreamConn(c, raw, u), nil
}

// dialTunnel opens a connection of its own for a WebSocket: never pooled,
// without upstreamConn's idle timeout.
func (u *upstream) dialTunnel() (net.Conn, error) {
	c, _, err := u.connect(u.hc.Addr)
	return c, err
}

// connect dials addr within the upstream's timeout (10 s at most) and does
// the TLS handshake for https; raw is the TCP connection under c.
func (u *upstream) connect(addr string) (c, raw net.Conn, err error) {
	limit := min(u.timeout, 10*time.Second)
	raw, err = net.DialTimeout("tcp", addr, limit)
	if err != nil {
		return nil, nil, err
	}
	c = raw
	if u.tls != nil {
		tc := tls.Client(raw, u.tls)
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	return c, raw, nil
}

func (u *upstream) client(addr string) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:  addr,
		IsTLS: u.scheme == "https",
		Dial:  u.dial,
		// Bodies stream back instead of being read whole (forward reads
		// small ones whole itself).
		StreamResponseBody: true,
		// The path was normalized and escaped by wxgate; send it as is.
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		// One attempt: fasthttp's retry cannot tell a request the upstream
		// never read from one it may have acted on; forward decides
		// (upstream.resend).
		MaxIdemponentCallAttempts: 1,
		// Shorter than the idle timeouts of common upstreams (Node and
		// Apache 5 s, nginx 75 s), so they rarely close a connection the
		// pool still offers.
		MaxIdleConnDuration: u.idle,
		MaxConns:            4096,
		// An answer's head that does not parse would otherwise be quoted
		// in the error the gateway logs, its Set-Cookie included.
		SecureErrorLogMessage: true,
	}
}

// streamAbove is the body size above which upstream answers stream rather
// than being read whole.
const streamAbove = 256 << 10

// Why a pooled connection was not used for a request; the request then
// goes out on a new connection.
var (
	errUpstreamClosed = errors.New("proxy: the upstream closed the idle connection")
	errIdleExpired    = errors.New("proxy: the connection was idle longer than the upstream keeps it")
	errSwitched       = errors.New("proxy: the upstream switched protocols on the connection")
)

// errSwitchedUnasked answers a 101: wxgate never asks for an upgrade
// (Upgrade is hop-by-hop), and its client would be left without an answer.
var errSwitchedUnasked = errors.New("proxy: the upstream answered 101 Switching Protocols to a request that asked for no upgrade")

// errAnswerCut replaces the end of a connection in the middle of an
// answer body: fasthttp reads it at a chunk boundary as the end of the
// body, and the client would get a complete-looking answer.
var errAnswerCut = fmt.Errorf("proxy: the upstream closed the connection before the end of its answer: %w", io.ErrUnexpectedEOF)

// resend sends req again on a new connection when its pooled connection
// failed in a way that shows the upstream never read it (issue 9), or read
// it without acting on it as far as HTTP can tell (an idempotent request
// without a body). It returns err unchanged otherwise. size is the body's
// length as forward set it.
func (u *upstream) resend(req *fasthttp.Request, resp *fasthttp.Response, body *clientBody, size int, err error) error {
	reason := u.replayable(req, resp, body, err)
	if reason == "" {
		return err
	}
	u.metrics.UpstreamRetry(u.name, reason)
	if body != nil {
		// fasthttp let go of the stream; not a byte of it was read.
		req.SetBodyStream(body, size)
	}
	// A new connection, used once: another pooled one may be as dead
	// (after an upstream restart all are).
	req.SetConnectionClose()
	defer req.Header.ResetConnectionClose()
	return u.fresh.Do(req, resp)
}

// replayable says why req may go out again after err, "" if it may not:
// only on a pooled connection (a new one failing says the upstream is
// down), before any answer byte, never after a timeout, never once a body
// byte was read.
func (u *upstream) replayable(req *fasthttp.Request, resp *fasthttp.Response, body *clientBody, err error) string {
	c := connOf(resp)
	if c == nil || c.exchanges < 2 || c.got > 0 || isTimeout(err) || (body != nil && body.n > 0) {
		return ""
	}
	switch {
	case c.refused == errIdleExpired:
		return "expired"
	case c.refused != nil || c.unsent:
		// Nothing of the request reached an open socket.
		return "closed"
	case errors.Is(err, fasthttp.ErrConnectionClosed) && idempotent(req):
		// The upstream may have read the request before its connection
		// closed; only a method that may be repeated goes again
		// (RFC 9110 9.2.2), as net/http's Transport does.
		return "reset"
	}
	return ""
}

// idempotent reports whether req's method may be repeated (RFC 9110 9.2.2).
func idempotent(req *fasthttp.Request) bool {
	h := &req.Header
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsTrace() || h.IsPut() || h.IsDelete()
}

// cut records an answer body that ended early: the client's connection is
// aborted (fasthttp writes no end of body after a read error) and the
// upstream connection closed.
func (u *upstream) cut(rid string, err error) {
	reason := "closed"
	if isTimeout(err) {
		reason = "timeout"
	}
	u.metrics.UpstreamCut(u.name, reason)
	u.log.LogAttrs(context.Background(), slog.LevelWarn, "upstream answer cut off",
		slog.String("upstream", u.name), slog.String("request_id", rid), slog.Any("error", err))
}

// upstreamConn is one connection to an upstream. It gives the connection
// an idle timeout (every read and write may wait at most the upstream's
// timeout: fasthttp's own deadlines cover the whole exchange, body
// included, which would cut long downloads), and it follows each exchange
// so that forward can tell whether a failed request may go out again and
// whether an answer body was cut.
type upstreamConn struct {
	net.Conn
	up   *upstream
	addr connAddr
	// raw and peekFD look at the socket without reading from it (nil where
	// that is not possible); peekFD is bound once, so a peek allocates
	// nothing.
	raw    syscall.RawConn
	peekFD func(fd uintptr) bool
	open   bool // what the last peek found
	buf    [1]byte

	// The exchange in progress. fasthttp gives a connection to one request
	// at a time, so only that request's goroutine touches these.
	exchanges int   // begun on this connection
	sending   bool  // the request is going out; no answer byte read yet
	refused   error // why begin refused the connection, nil if it did not
	// unsent: a write failed before any byte of the request went out. A
	// request partly sent is not: the upstream may have read its head and
	// acted on it.
	unsent bool
	sent   int64 // request bytes written in this exchange
	got    int64 // answer bytes read in this exchange
	// unread: the upstream closed while the request was going out; the
	// rest of it is dropped (Write).
	unread bool
	// switched: the upstream answered 101. fasthttp takes that for a
	// complete answer without a body and pools the connection, which no
	// longer speaks HTTP: what the upstream sends on it next would be read
	// as another request's answer.
	switched bool
	// framed: an answer body whose end is given by its framing is being
	// read, so the connection ending first is a cut.
	framed bool
	// resp is the answer being read, rid its request's ID (for the log).
	resp *fasthttp.Response
	rid  string
	// last is when the last answer byte came; limit is how long after it
	// the connection may be used again.
	last  time.Time
	limit time.Duration
}

// connAddr is an upstreamConn's local address. fasthttp keeps it in the
// Response (ParseNetConn), which is how forward finds the connection a
// request went out on.
type connAddr struct {
	net.Addr
	c *upstreamConn
}

// newUpstreamConn wraps c, whose TCP connection is raw (c itself for
// http).
func newUpstreamConn(c, raw net.Conn, up *upstream) *upstreamConn {
	uc := &upstreamConn{Conn: c, up: up, last: time.Now(), limit: up.idle}
	uc.addr = connAddr{Addr: c.LocalAddr(), c: uc}
	uc.initPeek(raw)
	return uc
}

// Handshake tells fasthttp that the connection needs no TLS handshake of
// its own: dial did it (fasthttp takes a connection with this method for
// one already speaking TLS).
func (c *upstreamConn) Handshake() error { return nil }

// connOf returns the connection resp was read from, nil if none.
func connOf(resp *fasthttp.Response) *upstreamConn {
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		return a.c
	}
	return nil
}

func (c *upstreamConn) LocalAddr() net.Addr { return &c.addr }

// begin starts an exchange; on a pooled connection it checks first that
// the connection is still open and not idle past its limit, and refuses
// it otherwise, before a byte of the request has gone out or a byte of
// the client's body has been read.
func (c *upstreamConn) begin(now time.Time) error {
	if c.sending {
		return c.refused
	}
	c.sending, c.exchanges = true, c.exchanges+1
	c.refused, c.unsent, c.unread, c.sent, c.got = nil, false, false, 0, 0
	c.framed, c.resp, c.rid = false, nil, ""
	if c.exchanges == 1 {
		return nil
	}
	switch {
	case c.switched:
		c.refused = errSwitched
	case now.Sub(c.last) > c.limit:
		c.refused = errIdleExpired
	case !c.stillOpen(now):
		c.refused = errUpstreamClosed
	}
	return c.refused
}

// stillOpen reports whether the upstream has neither closed the idle
// connection nor sent anything unasked on it (a "408 Request Timeout"
// before closing, say), either of which would be read as this request's
// answer.
func (c *upstreamConn) stillOpen(now time.Time) bool {
	if c.raw == nil {
		return true
	}
	// A deadline already past would fail the peek itself.
	if err := c.Conn.SetReadDeadline(now.Add(c.up.timeout)); err != nil {
		return false
	}
	c.open = false
	if err := c.raw.Read(c.peekFD); err != nil || !c.open {
		return false
	}
	return !c.tlsHeld()
}

// tlsHeld reports whether crypto/tls holds bytes it has already taken off
// the socket, where the peek cannot see them: an unasked record (or a
// close_notify) that came in the same segment as the last answer would
// otherwise be read as the next request's answer, another user's.
func (c *upstreamConn) tlsHeld() bool {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return false
	}
	// A deadline already past makes the read take only what tls holds:
	// the socket is not even tried. The timeout does not stick to the
	// connection; Read sets the next deadline.
	if err := tc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return true
	}
	n, err := tc.Read(c.buf[:])
	return n > 0 || !isTimeout(err)
}

// answered notes the answer's headers: the upstream's own idle timeout,
// and whether a connection ending before the body does is a cut.
func (c *upstreamConn) answered(resp *fasthttp.Response, rid string) {
	c.resp, c.rid = resp, rid
	// Without Content-Length or chunked framing the body ends with the
	// connection (-2): nothing to cut.
	c.framed = resp.IsBodyStream() && resp.Header.ContentLength() != -2
	if v := resp.Header.Peek("Keep-Alive"); len(v) > 0 {
		if d, ok := keepAliveTimeout(v); ok {
			c.limit = min(c.limit, d)
		}
	}
}

func (c *upstreamConn) Read(b []byte) (int, error) {
	c.sending = false
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.up.timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if c.got == 0 && switchesProtocols(b[:n]) {
			c.switched = true
		}
		c.got += int64(n)
		c.last = time.Now()
	}
	if err != nil && c.framed {
		c.framed = false
		if err == io.EOF {
			err = errAnswerCut
		}
		// fasthttp takes a connection that ends right after the last
		// chunk, before the final CRLF, for the end of the body: it must
		// still not go back to the pool.
		c.resp.SetConnectionClose()
		c.up.cut(c.rid, err)
	}
	return n, err
}

func (c *upstreamConn) Write(b []byte) (int, error) {
	now := time.Now()
	if err := c.begin(now); err != nil {
		return 0, err
	}
	if c.unread {
		return len(b), nil
	}
	if err := c.Conn.SetWriteDeadline(now.Add(c.up.timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(b)
	c.sent += int64(n)
	if err != nil {
		c.unsent = c.sent == 0
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			// The upstream stopped reading the request and closed, often
			// after answering early (a 413 for a body too large, a 401):
			// fasthttp would give up on the exchange and that answer would
			// become a 502. The rest of the request goes nowhere, and
			// fasthttp goes on to read the answer, or the connection's end.
			c.unread = true
			return len(b), nil
		}
	}
	return n, err
}

// SetDeadline and friends are ignored: the idle timeout governs.
func (c *upstreamConn) SetDeadline(time.Time) error      { return nil }
func (c *upstreamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *upstreamConn) SetWriteDeadline(time.Time) error { return nil }

// beginBody is called before the first byte of a client's body is read
// for the upstream: the body goes nowhere its connection has closed.
func beginBody(resp *fasthttp.Response) error {
	if c := connOf(resp); c != nil {
		return c.begin(time.Now())
	}
	return nil
}

// switchesProtocols reports whether an answer's first bytes are the status
// line of a 101.
func switchesProtocols(b []byte) bool {
	return len(b) >= 13 && bytes.HasPrefix(b, []byte("HTTP/1.")) && string(b[8:12]) == " 101" && (b[12] == ' ' || b[12] == '\r')
}

// keepAliveTimeout reads "timeout=N" from a Keep-Alive header value (RFC
// 2068 19.7.1.1) and returns how long wxgate may leave a connection idle:
// a second less than N, so that the request is there before the
// upstream's timer fires, or half of N below 2 s.
func keepAliveTimeout(v []byte) (time.Duration, bool) {
	const key = "timeout="
	for len(v) > 0 {
		var param []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			param, v = v[:i], v[i+1:]
		} else {
			param, v = v, nil
		}
		param = bytes.TrimSpace(param)
		if len(param) <= len(key) || !equalFold(param[:len(key)], key) {
			continue
		}
		n := 0
		for _, ch := range param[len(key):] {
			if ch < '0' || ch > '9' || n > 1e6 {
				return 0, false
			}
			n = n*10 + int(ch-'0')
		}
		d := time.Duration(n) * time.Second
		if d >= 2*time.Second {
			return d - time.Second, true
		}
		return d / 2, true
	}
	return 0, false
}
