package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A session or token family is read on every request that carries it, and
// decoding it (and, in Redis, fetching and opening it) was most of what an
// authenticated request cost (issue 10). The cache keeps the records read
// in the last moments decoded, in this process, for the next request.
//
// Nothing it keeps may outlive a change: a logout or a revocation takes
// effect at once on every replica.
//   - Every write through this process (a touch, a refresh, a logout, a
//     revocation) drops the key here, and with Redis publishes it, before
//     the write's caller hears back; every replica subscribes and drops it
//     as the message arrives.
//   - With Redis, what is kept is used only while the subscription has
//     nothing unread (watchConn): the news of a logout elsewhere is in this
//     replica's socket before the logout's answer leaves the other one.
//   - A read that raced a write is not kept: the cache's generation moves
//     on with every drop, and a record read under an older one is used
//     once and not kept.
//   - While the subscription is down (Redis restarting, a connection cut)
//     nothing is kept and every read goes to Redis; when it is back, the
//     cache starts empty, since what was published meanwhile was lost.
//   - Nothing is kept longer than cacheWindow twice, which bounds what no
//     write announces: a key's TTL running out in Redis, an operator's
//     redis-cli.

// cacheWindow is how long the cache's two generations last: a record is
// used for two windows after it was read, and is gone from memory within
// about two more. Short enough that an idle session costs nothing here,
// long enough that a busy one is read from the store once per two windows.
const cacheWindow = time.Second

// cacheable reports whether the records under key are kept decoded:
// sessions and token families, which every authenticated request reads.
func cacheable(key string) bool {
	return strings.HasPrefix(key, sessionPrefix) || strings.HasPrefix(key, familyPrefix)
}

// notifier is a store that other processes write too (Redis): it carries
// the news of a write of a cacheable key to every replica's cache.
type notifier interface {
	// publish tells every subscribed replica that key changed.
	publish(ctx context.Context, key string) error
	// watch delivers every published key to changed until ctx ends. It
	// calls live(true) once subscribed (again after each reconnection)
	// and live(false) as soon as messages may be missed.
	watch(ctx context.Context, changed func(key string), live func(bool))
	// unread reports whether news may have arrived that watch has not
	// yet passed on: then nothing kept is used.
	unread() bool
}

// recordCache keeps the sessions and token families a store read decoded
// for a moment (see above). Memory and Redis each have one, which their
// writes keep true.
type recordCache struct {
	// get is the store's own read.
	get func(ctx context.Context, key string) ([]byte, error)
	bus notifier // nil: only this process writes the store (memory)
	// start subscribes to bus at the first load.
	start sync.Once
	// live reports whether every write is being heard of: always with
	// no bus; with one, while its subscription is up.
	live atomic.Bool
	// mu guards cur, prev, next, gen and stop.
	mu sync.RWMutex
	// cur holds what was read in the current window, prev in the one
	// before; the first read at or after next drops prev and makes cur it.
	cur, prev map[string]*cacheEntry
	next      time.Time
	// gen moves on with every drop: a read begun under an older gen may
	// have raced a write, and is not kept.
	gen uint64
	// stop ends the subscription and done closes when it has; nil before
	// it starts and without a bus.
	stop context.CancelFunc
	done chan struct{}
	// closed is set by close: no subscription starts after it.
	closed bool
}

// cacheEntry is a record as the store holds it and decoded. Both are
// shared by every reader and never changed.
type cacheEntry struct {
	raw []byte
	val any
	// read is when it came from the store; it is used for two windows.
	read time.Time
}

// newRecordCache returns an empty cache over get. With a bus it keeps
// nothing until subscribed, which it does at the first load.
func newRecordCache(get func(context.Context, string) ([]byte, error), bus notifier) *recordCache {
	c := &recordCache{get: get, bus: bus, cur: map[string]*cacheEntry{}, prev: map[string]*cacheEntry{}}
	c.live.Store(bus == nil)
	return c
}

// loader is a store that can read a record through its cache. observed
// passes it on.
type loader interface {
	load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error)
}

// loadRecord reads a cacheable record through the cache of the store s is
// or wraps (each wrapper on the way passing loads on), or else with Get
// and decode.
func loadRecord(ctx context.Context, s Store, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	if l, ok := s.(loader); ok {
		return l.load(ctx, key, decode)
	}
	raw, err := s.Get(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	v, err := decode(raw)
	return v, raw, err
}

// close ends the subscription, if any, and keeps another from starting.
func (c *recordCache) close() {
	c.mu.Lock()
	c.closed = true
	stop, done := c.stop, c.done
	c.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// subscribe starts following the bus.
func (c *recordCache) subscribe() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		c.bus.watch(ctx, c.drop, c.setLive)
	}()
}

func (c *recordCache) setLive(up bool) {
	// Empty the cache either way: going down, so that nothing read
	// before is used while news is missed; coming up, since news was
	// missed while down.
	c.mu.Lock()
	c.cur, c.prev = map[string]*cacheEntry{}, map[string]*cacheEntry{}
	c.gen++
	c.live.Store(up)
	c.mu.Unlock()
}

// forget drops key if it is cacheable: the memory store's writes.
func (c *recordCache) forget(key string) {
	if cacheable(key) {
		c.drop(key)
	}
}

// drop forgets key (a write here, or news of one elsewhere).
func (c *recordCache) drop(key string) {
	c.mu.Lock()
	delete(c.cur, key)
	delete(c.prev, key)
	c.gen++
	c.mu.Unlock()
}

// load returns the record at key decoded by decode, from the cache or the
// store. The value is shared: callers copy it before changing it.
func (c *recordCache) load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	if c.bus != nil {
		c.start.Do(c.subscribe)
	}
	now := time.Now()
	// Asked before the look in the cache, never after: news that the
	// reader takes in and handles between the two would have dropped the
	// key after this load found it, and nothing would be unread by the
	// time it asked.
	quiet := c.bus == nil || !c.bus.unread()
	c.mu.RLock()
	e := c.cur[key]
	if e == nil {
		e = c.prev[key]
	}
	gen := c.gen
	c.mu.RUnlock()
	if e != nil && quiet && now.Sub(e.read) < 2*cacheWindow {
		return e.val, e.raw, nil
	}
	raw, err := c.get(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	val, err := decode(raw)
	if err != nil {
		return nil, nil, err
	}
	if !c.live.Load() {
		return val, raw, nil
	}
	c.mu.Lock()
	if c.gen == gen && c.live.Load() {
		if !now.Before(c.next) {
			// A new window: what was read two ago goes.
			c.prev, c.cur = c.cur, map[string]*cacheEntry{}
			c.next = now.Add(cacheWindow)
		}
		c.cur[key] = &cacheEntry{raw: raw, val: val, read: now}
	}
	c.mu.Unlock()
	return val, raw, nil
}

// wrote drops key after a write of it, and tells the other replicas if
// the write may have changed it (changed, or failed: it may have landed).
// A write the others did not hear of could leave a logged-out session in
// use there, so a failure to tell them fails the write.
func (c *recordCache) wrote(ctx context.Context, key string, changed bool, err error) error {
	if !cacheable(key) {
		return err
	}
	c.drop(key)
	if c.bus == nil || (!changed && err == nil) {
		return err
	}
	if perr := c.bus.publish(context.WithoutCancel(ctx), key); perr != nil {
		return errors.Join(err, fmt.Errorf("telling the other replicas of a write: %w", perr))
	}
	return err
}
