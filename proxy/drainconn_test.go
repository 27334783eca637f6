package proxy

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

// heldConn is a connection whose Read returns a request only once release
// is closed: the moment between bytes arriving and fasthttp seeing them,
// which the drain races with.
type heldConn struct {
	net.Conn
	release chan struct{}
	closed  atomic.Bool
}

func (c *heldConn) Read(b []byte) (int, error) {
	<-c.release
	// Even after Close: a socket that received the bytes before its
	// close may still hand them over, the worst case.
	return copy(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil
}

func (c *heldConn) Close() error { c.closed.Store(true); return nil }

func newHeld(set *connSet) (*drainConn, *heldConn) {
	h := &heldConn{release: make(chan struct{})}
	dc := &drainConn{Conn: h, conns: set}
	set.add(dc)
	return dc, h
}

// TestDrainConnRace: a request whose bytes come as the drain closes its
// idle connection is either wholly the server's (it will be answered:
// the close waits for it) or dropped unread; never read and then cut.
func TestDrainConnRace(t *testing.T) {
	t.Run("close wins: the bytes are dropped unread", func(t *testing.T) {
		set := newConnSet()
		dc, h := newHeld(set)
		got := make(chan int, 1)
		go func() { n, _ := dc.Read(make([]byte, 64)); got <- n }()
		set.stopping.Store(true)
		set.closeIdle()
		close(h.release)
		if n := <-got; n != 0 {
			t.Errorf("Read after the drain closed the idle connection = %d bytes, want 0 (dropped)", n)
		}
		if !h.closed.Load() {
			t.Error("the idle connection was not closed")
		}
	})
	t.Run("bytes win: the request is kept and answered", func(t *testing.T) {
		set := newConnSet()
		dc, h := newHeld(set)
		close(h.release)
		if n, err := dc.Read(make([]byte, 64)); n == 0 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		set.stopping.Store(true)
		set.closeIdle()
		// fasthttp's own Shutdown takes the connection for idle a moment
		// late and closes it.
		_ = dc.Close()
		if h.closed.Load() {
			t.Fatal("a connection whose request was read was closed before its answer")
		}
		trackConnState(dc, fasthttp.StateIdle) // answered
		_ = dc.Close()
		if !h.closed.Load() {
			t.Error("the connection was not closed once its request was answered")
		}
	})
	t.Run("cut at the deadline counts the busy", func(t *testing.T) {
		set := newConnSet()
		busy, hb := newHeld(set)
		_, hi := newHeld(set)
		close(hb.release)
		if _, err := busy.Read(make([]byte, 64)); err != nil {
			t.Fatal(err)
		}
		if n := set.cut(); n != 1 {
			t.Errorf("cut() = %d, want 1 busy connection", n)
		}
		if !hb.closed.Load() || !hi.closed.Load() {
			t.Error("cut left a connection open")
		}
		if n := len(set.snapshot()); n != 0 {
			t.Errorf("%d connections still tracked after cut", n)
		}
	})
}
