package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// run drives f.addr from one goroutine with its own epoll set, as a wrk
// thread does, and reports the latencies. The generator must wake on time: Go's
// timers, when nothing else is ready, sleep in whole milliseconds
// (runtime/netpoll_epoll.go rounds a shorter epoll_wait up to 1 ms), while
// at half load a connection's requests are under a millisecond apart. A
// goroutine per connection with time.Sleep was late by 1 to 1.5 ms at the
// p99 and put 0.5 ms on the origin's p50; the same with a timerfd per
// goroutine was on time but cost about 30 µs of CPU per request, mostly
// the kernel switching threads, on cores it shares with the row it
// measures. This loop, with epoll_pwait2's timeout in nanoseconds, costs
// 10 to 26 µs in trial runs (wrk, closed loop: 7).
func (f fixedRate) run() (fixedResult, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fixedResult{}, fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(ep)
	total := int(f.rate * f.duration.Seconds())
	conns := make([]loopConn, f.conns)
	defer func() {
		for _, c := range conns {
			if c.fd > 0 {
				unix.Close(c.fd)
			}
		}
	}()
	for i := range conns {
		c := &conns[i]
		if c.fd, err = dial(f.addr); err != nil {
			return fixedResult{}, err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(i)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			return fixedResult{}, fmt.Errorf("epoll_ctl: %w", err)
		}
		n := (total - i + f.conns - 1) / f.conns
		c.next = i
		c.buf = make([]byte, 4096)
		c.log.latency = make([]time.Duration, 0, n)
		c.log.lag = make([]time.Duration, 0, n)
	}
	// A moment ahead, past the set-up.
	start := time.Now().Add(5 * time.Millisecond)
	stop := start.Add(f.duration + f.grace)
	for i := range conns {
		conns[i].free = start
	}
	var events [64]unix.EpollEvent
	for {
		now := time.Now()
		if now.After(stop) {
			for i := range conns {
				c := &conns[i]
				c.log.missed += (total - c.next + f.conns - 1) / f.conns
			}
			break
		}
		// Send what is due on each free connection, and find when the
		// next is due.
		wake, active := stop, false
		for i := range conns {
			c := &conns[i]
			if c.out || c.next >= total {
				active = active || c.out
				continue
			}
			active = true
			at := due(start, f.rate, c.next)
			if at.After(now) {
				if at.Before(wake) {
					wake = at
				}
				continue
			}
			c.log.lag = append(c.log.lag, now.Sub(later(at, c.free)))
			// The socket's send buffer is empty (one request at a time),
			// so a short request goes whole or not at all.
			if n, err := unix.Write(c.fd, f.request); err != nil || n != len(f.request) {
				return fixedResult{}, fmt.Errorf("request %d: write: %d of %d bytes: %v", c.next, n, len(f.request), err)
			}
			c.out, c.at = true, at
		}
		if !active {
			break
		}
		n, err := epollWait(ep, events[:], time.Until(wake))
		if err != nil {
			return fixedResult{}, err
		}
		now = time.Now()
		for _, ev := range events[:n] {
			c := &conns[ev.Fd]
			if err := c.read(now, f.conns); err != nil {
				return fixedResult{}, fmt.Errorf("request %d: %w", c.next, err)
			}
		}
	}
	logs := make([]connLog, len(conns))
	for i, c := range conns {
		logs[i] = c.log
	}
	return summarize(f.rate, f.duration, start, logs), nil
}

// loopConn is one connection of run's loop.
type loopConn struct {
	fd   int
	next int // the request to send next, or the one out
	out  bool
	at   time.Time // when the request out was due
	free time.Time // when the last answer came, or the start
	buf  []byte    // the answer so far, in buf[:n]
	n    int
	log  connLog
}

// read takes what the connection has, and once the answer is whole logs
// it at now and readies the connection's next request.
func (c *loopConn) read(now time.Time, conns int) error {
	for {
		m, err := unix.Read(c.fd, c.buf[c.n:])
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if m == 0 {
			return errors.New("the server closed the connection")
		}
		c.n += m
		end, status, err := answerLen(c.buf[:c.n])
		if err != nil {
			return err
		}
		switch {
		case end == 0 && c.n == len(c.buf), end > len(c.buf):
			c.buf = append(c.buf, make([]byte, max(end, 2*len(c.buf))-len(c.buf))...)
		case end > 0 && c.n > end, !c.out:
			return errors.New("the server sent more than it was asked for")
		case end > 0 && c.n == end:
			c.log.latency = append(c.log.latency, now.Sub(c.at))
			if status < 200 || status > 299 {
				c.log.non2xx++
			}
			c.log.last, c.free = now, now
			c.out, c.n = false, 0
			c.next += conns
			return nil
		}
	}
}

// dial connects to addr (host:port, an IP) with a non-blocking socket
// outside Go's netpoller, which would otherwise wake on its events too.
func dial(addr string) (int, error) {
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return 0, err
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(nil)
	if ip4 := ap.IP.To4(); ip4 != nil {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ip4)}
	} else {
		sa = &unix.SockaddrInet6{Port: ap.Port, Addr: [16]byte(ap.IP.To16())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("TCP_NODELAY: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

// epollWait is epoll_pwait2: epoll_wait with a timeout in nanoseconds
// (Linux 5.11). Before it, epoll_wait's whole milliseconds, rounded up
// (the lag column shows the cost). An interrupted wait returns no events.
// Not a raw system call: the runtime must see the thread block, or the
// thread keeps its P for the whole wait, and with GOMAXPROCS 2 two runs
// at once (parallel tests) left none for the servers they measured.
func epollWait(ep int, events []unix.EpollEvent, timeout time.Duration) (int, error) {
	ts := unix.NsecToTimespec(int64(max(timeout, 0)))
	if !noPwait2.Load() {
		n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			return 0, nil
		case unix.ENOSYS:
			noPwait2.Store(true)
		default:
			return 0, fmt.Errorf("epoll_pwait2: %w", errno)
		}
	}
	n, err := unix.EpollWait(ep, events, int((max(timeout, 0)+time.Millisecond-1)/time.Millisecond))
	if errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("epoll_wait: %w", err)
	}
	return n, nil
}

// noPwait2 is set once the kernel has said it has no epoll_pwait2.
var noPwait2 atomic.Bool
