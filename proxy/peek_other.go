//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package proxy

import "net"

// initPeek leaves stillOpen without a look at the socket: a closed pooled
// connection is then found when the request fails, and only idempotent
// requests without a body go out again.
func (c *upstreamConn) initPeek(net.Conn) {}
