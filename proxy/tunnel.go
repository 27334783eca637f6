package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxgate/wxgate/metrics"
)

// A tunnel is one WebSocket after its handshake: the client's connection,
// taken from fasthttp, and the upstream's, with bytes copied both ways
// until either side closes; then both close. It has no idle timeout of its
// own (a WebSocket may stay quiet for hours; its ping frames are the
// application's); TCP keep-alive, on for both connections, ends one whose
// peer vanished. fasthttp forgets a connection it hands over, so Shutdown
// waits for tunnels here and closes those still open at its deadline.
type tunnel struct {
	set      *tunnelSet
	upstream string
	place    tunnelPlace // what reserve held for it
	up       net.Conn
	upr      *bufio.Reader // up, with what the upstream sent after its 101
	done     chan struct{}
	ended    atomic.Bool
	// closeClient closes the client's connection once run has it: end
	// must close both sides, since a copy blocked writing to a client
	// that reads nothing never sees the upstream's side close.
	mu          sync.Mutex
	closeClient func() error
}

// tunnelSet is the gateway's open tunnels.
type tunnelSet struct {
	metrics *metrics.Metrics
	// max and perClient bound the tunnels open and reserved, in all and
	// per clientKey ([server] max_websockets, max_websockets_per_client);
	// perNetwork, per networkKey, is a tenth of max (at least perClient),
	// as the login starts' share (startLimiter): one IPv6 /48, or a /56
	// as many providers hand out, spread over its /64s would otherwise
	// take every WebSocket of the replica.
	// writeTimeout bounds how long a write to either side waits with the
	// peer taking nothing (websocket_write_timeout).
	max, perClient, perNetwork int
	writeTimeout               time.Duration

	mu  sync.Mutex
	set map[*tunnel]struct{}
	// held counts each client's and each network's tunnels, reserved or
	// open (a /32 or /64 never equals a /24 or /48), and total all of
	// them; an entry goes at zero, so the map is as big as what is open.
	held  map[netip.Prefix]int
	total int
}

func newTunnelSet(m *metrics.Metrics, total, perClient int, writeTimeout time.Duration) *tunnelSet {
	return &tunnelSet{
		metrics: m, max: total, perClient: perClient, perNetwork: max(perClient, total/10), writeTimeout: writeTimeout,
		set: map[*tunnel]struct{}{}, held: map[netip.Prefix]int{},
	}
}

// Errors of reserve.
var (
	errTunnelsOfClient  = errors.New("proxy: this client has max_websockets_per_client WebSockets open")
	errTunnelsOfNetwork = errors.New("proxy: this client's network (IPv4 /24, IPv6 /48) has a tenth of max_websockets open")
	errTunnelsFull      = errors.New("proxy: max_websockets WebSockets are open")
)

// A tunnelPlace is a tunnel's share of its client's and its network's bounds.
type tunnelPlace struct{ client, network netip.Prefix }

// reserve holds a place for a tunnel of client before the upstream is
// asked, so that a handshake past the bounds costs the upstream nothing.
// The place is open's to take, or release's to give back.
func (s *tunnelSet) reserve(client netip.Addr) (tunnelPlace, error) {
	p := tunnelPlace{clientKey(client), networkKey(client)}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.held[p.client] >= s.perClient:
		return p, errTunnelsOfClient
	case s.held[p.network] >= s.perNetwork:
		return p, errTunnelsOfNetwork
	case s.total >= s.max:
		return p, errTunnelsFull
	}
	s.held[p.client]++
	s.held[p.network]++
	s.total++
	return p, nil
}

// release gives back a place reserve held.
func (s *tunnelSet) release(p tunnelPlace) {
	s.mu.Lock()
	defer s.mu.Unlock()
	decrement(s.held, p.client)
	decrement(s.held, p.network)
	s.total--
}

// open records a tunnel to upstream over up, in the place reserve held,
// before fasthttp hands over the client's connection.
func (s *tunnelSet) open(upstream string, p tunnelPlace, up net.Conn, upr *bufio.Reader) *tunnel {
	t := &tunnel{set: s, upstream: upstream, place: p, up: up, upr: upr, done: make(chan struct{})}
	s.mu.Lock()
	s.set[t] = struct{}{}
	s.mu.Unlock()
	s.metrics.WebSocketOpened(upstream)
	return t
}

// run answers the client with head (the upstream's 101) and copies bytes
// both ways until either side ends; then it closes both connections.
func (t *tunnel) run(client net.Conn, head []byte) {
	defer t.end()
	// fasthttp's hijacked connection ignores Close; the drain's would wait
	// for the end of a request while stopping.
	conn := client
	if u, ok := client.(interface{ UnsafeConn() net.Conn }); ok {
		conn = u.UnsafeConn()
	}
	closeClient := conn.Close
	if dc := drainConnOf(conn); dc != nil {
		dc.tunnel.Store(nil)
		closeClient = dc.closeNow
	}
	defer closeClient()
	t.mu.Lock()
	ended := t.ended.Load()
	if !ended {
		t.closeClient = closeClient
	}
	t.mu.Unlock()
	if ended {
		return
	}
	if _, err := client.Write(head); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	timeout := t.set.writeTimeout
	go func() {
		// client reads fasthttp's buffer first: frames sent right behind
		// the handshake.
		_ = copyTimed(t.up, client, timeout)
		done <- struct{}{}
	}()
	go func() {
		_ = copyTimed(client, t.upr, timeout)
		done <- struct{}{}
	}()
	<-done
	// Either side's end ends the other copy.
	_ = t.up.Close()
	_ = closeClient()
	<-done
}

// end removes t from its set, once.
func (t *tunnel) end() {
	if !t.ended.CompareAndSwap(false, true) {
		return
	}
	_ = t.up.Close()
	t.mu.Lock()
	closeClient := t.closeClient
	t.mu.Unlock()
	if closeClient != nil {
		_ = closeClient()
	}
	s := t.set
	s.mu.Lock()
	delete(s.set, t)
	s.mu.Unlock()
	s.release(t.place)
	s.metrics.WebSocketClosed(t.upstream)
	close(t.done)
}

// copyTimed copies src to dst until either fails, or dst accepts nothing
// for timeout (writeTimed): a peer that stops reading must not hold a
// tunnel, its goroutines and the upstream's connection, for ever. Reads
// wait as long as they like: a WebSocket may be quiet for hours.
func copyTimed(dst net.Conn, src io.Reader, timeout time.Duration) error {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if err := writeTimed(dst, buf[:n], timeout); err != nil {
				return err
			}
		}
		if rerr != nil {
			return rerr
		}
	}
}

// writeTimed writes p to dst, failing when dst accepts no byte for
// timeout. A deadline on the whole write would cut a peer that reads
// steadily but slowly: the kernel wakes a blocked writer only once a
// third of its send buffer (up to megabytes) is free, so one write of
// 32 KiB to a client reading 400 KB/s could wait seconds.
func writeTimed(dst net.Conn, p []byte, timeout time.Duration) error {
	for {
		if err := dst.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		n, err := dst.Write(p)
		p = p[n:]
		if err == nil || n == 0 || !isTimeout(err) {
			return err
		}
		// Bytes went out before the deadline: the peer reads. (A TLS
		// connection fails every write after a timeout, and ends here.)
	}
}

// count returns how many tunnels are open.
func (s *tunnelSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.set)
}

// any returns one open tunnel, nil if none is.
func (s *tunnelSet) any() *tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.set {
		return t
	}
	return nil
}

// wait waits for every tunnel to end until ctx ends; then it closes those
// still open and returns how many.
func (s *tunnelSet) wait(ctx context.Context) int {
	for {
		t := s.any()
		if t == nil {
			return 0
		}
		select {
		case <-t.done:
		case <-ctx.Done():
			return s.closeAll()
		}
	}
}

// closeAll ends every tunnel, closing both its sides, and returns how
// many were open.
func (s *tunnelSet) closeAll() int {
	s.mu.Lock()
	all := make([]*tunnel, 0, len(s.set))
	for t := range s.set {
		all = append(all, t)
	}
	s.mu.Unlock()
	for _, t := range all {
		t.end()
	}
	return len(all)
}
