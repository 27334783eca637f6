//go:build linux || darwin || freebsd || netbsd || openbsd

package proxy

import (
	"net"
	"syscall"
)

// initPeek prepares stillOpen's look at the socket.
func (c *upstreamConn) initPeek(tcp net.Conn) {
	sc, ok := tcp.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw, c.peekFD = raw, c.peek
}

// peek looks at the socket without waiting or taking anything from it:
// open only when nothing is there to read (EAGAIN), not at the end of the
// stream, a reset or unasked bytes.
func (c *upstreamConn) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.open = err == syscall.EAGAIN || err == syscall.EINTR
	return true
}
