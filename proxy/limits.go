package proxy

import (
	"net/netip"
	"sync"
	"time"
)

// startLimiter bounds the pending logins this replica creates, per client
// and in total, over the life of a pending login. Every GET /start stores
// state for that long, so without a bound a flood of starts grows memory
// (and the store) without end. A refused start touches no store, so a flood
// from one client can neither evict nor slow the logins of others.
//
// A client is an IPv4 address or an IPv6 /64; a network, an IPv4 /24 or an
// IPv6 /48, may hold at most a tenth of the total (at least the per-client
// bound). One customer's /48 spread over thousands of /64s, or a rented
// /24, could otherwise fill the total alone and lock everyone out; it now
// takes ten such networks. The share is generous because carrier-grade NAT
// and mobile carriers put many real users in one network, and it applies
// at all times: a share that switched on under pressure would let one
// network create the pressure and so cap every other.
//
// A start that ends in a login is released: the bound is on logins in
// flight, and counting finished ones would refuse the 301st person behind
// one carrier-grade NAT within ten minutes although nothing is pending.
// Only a login WeChat authorized releases, so a client cannot free its own
// slots by sending callbacks with made-up codes.
//
// It counts starts in two fixed windows of the pending lifetime and weighs
// the previous one by how much of it still overlaps the sliding window: a
// cheap estimate of the starts in the last lifetime, which is the number of
// pending logins still alive.
type startLimiter struct {
	perClient, total int
	window           time.Duration
	now              func() time.Time

	mu sync.Mutex // guards the fields below
	// since is when the current window began.
	since time.Time
	// cur and prev count starts by client and by network (both keyed by
	// prefix; a /64 or /32 never equals a /48 or /24) in the current and
	// the previous window. Their size is bounded by total: a key only gets
	// an entry by being admitted.
	cur, prev           map[netip.Prefix]int
	curTotal, prevTotal int
	// perNetwork is a network's share of the total.
	perNetwork int
}

func newStartLimiter(perClient, total int, window time.Duration, now func() time.Time) *startLimiter {
	return &startLimiter{
		perClient: perClient, total: total, window: window, now: now,
		perNetwork: max(perClient, total/10),
		since:      now(), cur: map[netip.Prefix]int{}, prev: map[netip.Prefix]int{},
	}
}

// clientKey groups addresses that belong to one client: an IPv4 address, or
// the /64 an IPv6 host picks its addresses from at will.
func clientKey(a netip.Addr) netip.Prefix { return prefixOf(a, 32, 64) }

// networkKey is the network a client address belongs to: its IPv4 /24 or
// IPv6 /48.
func networkKey(a netip.Addr) netip.Prefix { return prefixOf(a, 24, 48) }

// prefixOf is a's prefix of v4 bits (IPv4, also IPv4-mapped) or v6 bits.
func prefixOf(a netip.Addr, v4, v6 int) netip.Prefix {
	a = a.Unmap()
	bits := v4
	if a.Is6() {
		bits = v6
	}
	p, _ := a.Prefix(bits)
	return p
}

// allow admits one start from client, or reports why not ("client",
// "network" or "total").
func (l *startLimiter) allow(client netip.Addr) (ok bool, reason string) {
	key, network := clientKey(client), networkKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if elapsed := now.Sub(l.since); elapsed >= l.window {
		if elapsed >= 2*l.window {
			l.prev, l.prevTotal = map[netip.Prefix]int{}, 0
		} else {
			l.prev, l.prevTotal = l.cur, l.curTotal
		}
		l.cur, l.curTotal = map[netip.Prefix]int{}, 0
		l.since = now.Add(-(elapsed % l.window))
	}
	// The share of the previous window still inside the sliding one.
	weight := 1 - float64(now.Sub(l.since))/float64(l.window)
	if float64(l.prev[key])*weight+float64(l.cur[key]) >= float64(l.perClient) {
		return false, "client"
	}
	total := float64(l.prevTotal)*weight + float64(l.curTotal)
	if total >= float64(l.total) {
		return false, "total"
	}
	if float64(l.prev[network])*weight+float64(l.cur[network]) >= float64(l.perNetwork) {
		return false, "network"
	}
	l.cur[key]++
	l.cur[network]++
	l.curTotal++
	return true, ""
}

// release gives back one start of client after its login completed: from
// the current window if it counted one there, else from the previous one.
// The callback may reach a replica other than the one that admitted the
// start; a count is never taken below zero, so that replica can admit at
// most one more start per completed login, never more than were pending.
func (l *startLimiter) release(client netip.Addr) {
	key, network := clientKey(client), networkKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cur[key] > 0:
		decrement(l.cur, key)
		decrement(l.cur, network)
		l.curTotal--
	case l.prev[key] > 0:
		decrement(l.prev, key)
		decrement(l.prev, network)
		l.prevTotal--
	}
}

// decrement lowers counts[k], dropping the entry at zero so that the maps
// stay as small as what is pending.
func decrement(counts map[netip.Prefix]int, k netip.Prefix) {
	if counts[k] <= 1 {
		delete(counts, k)
		return
	}
	counts[k]--
}
