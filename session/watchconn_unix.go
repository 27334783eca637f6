//go:build linux || darwin || freebsd || netbsd || openbsd

package session

import (
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// watchConn is the connection the cache's subscription reads. It tells
// whether news of a write may be waiting unread: bytes in the socket, or
// bytes the reader took and has not finished with. The cache uses what it
// keeps only when neither (recordCache.load): a logout on another replica
// is published before its answer leaves that replica, so by the time a
// request could follow it here the news is at least in this socket.
type watchConn struct {
	net.Conn
	raw syscall.RawConn
	// idle is set while the reader waits for bytes with everything before
	// them handled: the subscription's reader calls Read only once it has
	// handled all it read.
	idle atomic.Bool
}

func newWatchConn(c net.Conn) *watchConn {
	w := &watchConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	return w
}

// Read waits until bytes arrive, and only then clears idle and takes them:
// at every moment the news is either in the socket or known to be in hand.
func (w *watchConn) Read(b []byte) (int, error) {
	if w.raw != nil {
		w.idle.Store(true)
		err := w.raw.Read(func(fd uintptr) bool { return waiting(fd) })
		w.idle.Store(false)
		if err != nil {
			return 0, err
		}
	}
	return w.Conn.Read(b)
}

// unread reports whether news may be waiting: bytes in the socket (looked
// at first), or the reader busy with bytes it took. Without a view of the
// socket it always may.
func (w *watchConn) unread() bool {
	if w.raw == nil {
		return true
	}
	some := true
	if err := w.raw.Control(func(fd uintptr) { some = waiting(fd) }); err != nil || some {
		return true
	}
	return !w.idle.Load()
}

// waiting reports whether the socket fd has something to read: bytes, its
// end, or an error. Only "nothing yet" (EAGAIN) is no.
func waiting(fd uintptr) bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err != unix.EAGAIN
}
