package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The drain (issue 9, finding 5). After SIGTERM the gateway first only
// stops being ready (Drain) and serves on, so that load balancers take it
// out of rotation; then Shutdown closes the listeners, closes every
// connection that sits between requests at once, and waits for the
// requests in flight.
//
// fasthttp's own Shutdown closes a keep-alive connection once it looks
// idle, and one that never carried a request only 5 s after it was
// opened, which held `wxgate dev`'s Ctrl-C while a browser kept a
// pre-connection open. Its idea of "idle" is also a moment late: a
// request whose first bytes arrive just as the connection is closed is
// read, served upstream, and its answer lost. drainConn keeps the truth
// itself: a connection is closed between requests only if not one byte
// of the next request has reached fasthttp, and bytes that come after
// that close are dropped unread. Either a request is answered or it was
// never read, which a client may safely send again.

// Where a connection stands, for the drain.
const (
	// connIdle: between requests; no byte of a next request has reached
	// fasthttp. Closing the connection now loses nothing.
	connIdle int32 = iota
	// connBusy: fasthttp has bytes of a request, which will be answered.
	connBusy
	// connShut: closed between requests by the drain; nothing more is
	// read or served on it.
	connShut
)

// connSet is one listener's open connections.
type connSet struct {
	// stopping is set when Shutdown begins: from then on a close that
	// fasthttp asks for while a request is being served waits for the
	// request's end (fasthttp reports StateClosed when the connection
	// really ends).
	stopping atomic.Bool

	mu  sync.Mutex // guards set
	set map[*drainConn]struct{}
}

func newConnSet() *connSet { return &connSet{set: map[*drainConn]struct{}{}} }

func (s *connSet) add(c *drainConn) {
	s.mu.Lock()
	s.set[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c *drainConn) {
	s.mu.Lock()
	delete(s.set, c)
	s.mu.Unlock()
}

func (s *connSet) snapshot() []*drainConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]*drainConn, 0, len(s.set))
	for c := range s.set {
		all = append(all, c)
	}
	return all
}

// closeIdle closes every connection that is between requests.
func (s *connSet) closeIdle() {
	for _, c := range s.snapshot() {
		if c.state.CompareAndSwap(connIdle, connShut) {
			_ = c.closeNow()
		}
	}
}

// busy counts the connections serving a request.
func (s *connSet) busy() int {
	n := 0
	for _, c := range s.snapshot() {
		if c.state.Load() == connBusy {
			n++
		}
	}
	return n
}

// cut closes every connection and returns how many were serving a request.
func (s *connSet) cut() int {
	n := 0
	for _, c := range s.snapshot() {
		if c.state.Swap(connShut) == connBusy {
			n++
		}
		_ = c.closeNow()
	}
	return n
}

// drainListener tracks the connections it accepts in conns.
type drainListener struct {
	net.Listener
	conns *connSet
}

func (l drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, isTLS := c.(interface{ ConnectionState() tls.ConnectionState }); isTLS {
		return c, nil // fasthttp must still see the TLS connection
	}
	dc := &drainConn{Conn: c, conns: l.conns}
	l.conns.add(dc)
	return dc, nil
}

// drainConn is an accepted connection whose place between or inside
// requests the drain can read and act on atomically.
type drainConn struct {
	net.Conn
	conns  *connSet
	state  atomic.Int32
	closed atomic.Bool
	// tunnel is a WebSocket's tunnel between its 101 and fasthttp handing
	// the connection over: if fasthttp closes the connection instead (a
	// write to a client that went away), the tunnel ends with it.
	tunnel atomic.Pointer[tunnel]
}

func (c *drainConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.state.Load() != connBusy && !c.state.CompareAndSwap(connIdle, connBusy) {
		// The drain closed the connection between requests while these
		// bytes came: drop them as if they had come after the close.
		return 0, io.EOF
	}
	return n, err
}

// Close closes the connection, unless the gateway is stopping and a
// request on it is being served: fasthttp's Shutdown closes connections
// it takes for idle a moment late, and that request must be answered.
func (c *drainConn) Close() error {
	if !c.state.CompareAndSwap(connIdle, connShut) && c.state.Load() == connBusy && c.conns.stopping.Load() {
		return nil
	}
	return c.closeNow()
}

func (c *drainConn) closeNow() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.conns.remove(c)
	return c.Conn.Close()
}

// drainConnOf returns the drainConn under a connection fasthttp serves, or
// nil (TLS, tests' fake connections).
func drainConnOf(nc net.Conn) *drainConn {
	switch c := nc.(type) {
	case *drainConn:
		return c
	case *hangupConn:
		dc, _ := c.Conn.(*drainConn)
		return dc
	}
	return nil
}

// trackConnState follows fasthttp's view of a connection (its ConnState
// hook): a request read from bytes already buffered makes the connection
// busy without a Read, and a finished request makes it idle again.
func trackConnState(nc net.Conn, st fasthttp.ConnState) {
	c := drainConnOf(nc)
	if c == nil {
		return
	}
	switch st {
	case fasthttp.StateActive:
		c.state.CompareAndSwap(connIdle, connBusy)
	case fasthttp.StateIdle:
		c.state.CompareAndSwap(connBusy, connIdle)
	case fasthttp.StateClosed:
		if t := c.tunnel.Swap(nil); t != nil {
			t.end()
		}
		_ = c.closeNow()
	}
}

// shutOut reports whether the request on ctx came on a connection the
// drain has already closed between requests (a pipelined request fasthttp
// had buffered): it is dropped unserved, since no answer can reach the
// client.
func shutOut(ctx *fasthttp.RequestCtx) bool {
	c := drainConnOf(ctx.Conn())
	return c != nil && c.state.Load() == connShut
}

// closeIdleUntil closes the connections of sets that are between requests
// now and every interval after, until done is closed: connections accepted
// just before the listener closed, and those fasthttp's Shutdown would
// leave open for 5 s, close at once.
func closeIdleUntil(done <-chan struct{}, interval time.Duration, sets ...*connSet) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, s := range sets {
			s.closeIdle()
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}
