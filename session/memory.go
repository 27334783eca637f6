package session

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Memory is a Store in process memory. Keys and values are copied in and
// values out, so callers may reuse their buffers (a key read from a
// request must not change under the map). It suits one replica; several
// replicas need Redis. SaveSnapshot and LoadSnapshot carry it across a
// graceful restart (snapshot.go).
type Memory struct {
	d *memoryData
	// records keeps the sessions and token families read lately decoded;
	// every write drops what it writes (cache.go).
	records *recordCache
}

// memoryData is a Memory's entries. Its janitor holds it, not the Memory,
// so that a Memory no longer used is collected and stops its janitor.
//
// It is its own map rather than go-cache's, whose entries box each value
// in an interface beside its expiry: an idle session's share of the store
// is most of what it costs (issue 10).
type memoryData struct {
	// mu guards values, sets and every *memberSet in sets (AddMember
	// changes them in place). A write's check and store (SetNX, Replace,
	// Swap) are one step under it.
	mu sync.RWMutex
	// A key is in one map at most: a value stored under a set's key
	// replaces the set, and the other way round.
	values map[string]stored
	sets   map[string]*memberSet
	// named is the member name copied last. A login's entries in the
	// indexes name it alike (by openid and by unionid, "s:"+key) or by a
	// suffix (the token index, key), one after another: they share its
	// copy (own).
	named string
}

// stored is a value with its expiry.
type stored struct {
	// v is the value packed (pack.go).
	v string
	// exp is when the value is gone, in unix nanoseconds: it is
	// not found after, and the janitor drops it.
	exp int64
}

// NewMemory returns an empty memory store whose janitor drops expired
// entries every cleanup interval (0 means one minute).
func NewMemory(cleanup time.Duration) *Memory {
	if cleanup <= 0 {
		cleanup = time.Minute
	}
	m := newMemory()
	stop := make(chan struct{})
	go m.d.janitor(cleanup, stop)
	runtime.AddCleanup(m, func(stop chan struct{}) { close(stop) }, stop)
	return m
}

// newMemory returns an empty memory store with no janitor: expired entries
// are not found, but stay in memory until overwritten.
func newMemory() *Memory {
	m := &Memory{d: &memoryData{values: map[string]stored{}, sets: map[string]*memberSet{}}}
	m.records = newRecordCache(m.Get, nil)
	return m
}

// janitor drops the expired entries every interval until stop closes.
func (d *memoryData) janitor(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.dropExpired(time.Now().UnixNano())
		case <-stop:
			return
		}
	}
}

func (d *memoryData) dropExpired(now int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, e := range d.values {
		if now > e.exp {
			delete(d.values, k)
		}
	}
	for k, s := range d.sets {
		if now > s.exp {
			delete(d.sets, k)
		}
	}
}

// value returns the unexpired value at key. Callers hold d.mu.
func (d *memoryData) value(key string, now int64) (string, bool) {
	e, ok := d.values[key]
	if !ok || now > e.exp {
		return "", false
	}
	return e.v, true
}

// set returns the unexpired set at key, or nil. Callers hold d.mu.
func (d *memoryData) set(key string, now int64) *memberSet {
	s := d.sets[key]
	if s == nil || now > s.exp {
		return nil
	}
	return s
}

// has reports whether key holds an unexpired value or set. Callers hold
// d.mu.
func (d *memoryData) has(key string, now int64) bool {
	_, ok := d.value(key, now)
	return ok || d.set(key, now) != nil
}

// write stores value under key for ttl from now, or drops key when ttl is
// zero or less (a value already at its end). Callers hold d.mu.
func (d *memoryData) write(key string, value []byte, now int64, ttl time.Duration) {
	if ttl <= 0 {
		d.drop(key)
		return
	}
	d.put(key, value, now, ttl)
}

// put stores value under key for ttl from now. Callers hold d.mu.
func (d *memoryData) put(key string, value []byte, now int64, ttl time.Duration) {
	delete(d.sets, key)
	// Cloned: Go replaces a string map key with the caller's on update.
	var buf [1024]byte
	d.values[strings.Clone(key)] = stored{v: string(appendPacked(buf[:0], value)), exp: after(now, int64(ttl))}
}

// after returns now plus d (d >= 0) in unix nanoseconds, or the latest
// instant if that is past it: a ttl of centuries (a lifetime configured
// as "forever") must keep the entry, not wrap to a past that drops it at
// once.
func after(now, d int64) int64 {
	if now+d < now {
		return math.MaxInt64
	}
	return now + d
}

// latest is the last instant in unix nanoseconds, in 2262.
var latest = time.Unix(0, math.MaxInt64)

// unixNano is t.UnixNano, but the latest instant for a t past it, where
// UnixNano wraps to the past.
func unixNano(t time.Time) int64 {
	if t.After(latest) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// own returns name as a set keeps it: a suffix of the name copied last
// if it is one, else a new copy. Callers hold d.mu.
func (d *memoryData) own(name string) string {
	if strings.HasSuffix(d.named, name) {
		return d.named[len(d.named)-len(name):]
	}
	d.named = strings.Clone(name)
	return d.named
}

// drop removes whatever key holds. Callers hold d.mu.
func (d *memoryData) drop(key string) {
	delete(d.values, key)
	delete(d.sets, key)
}

func (m *Memory) load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	return m.records.load(ctx, key, decode)
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) ([]byte, error) {
	now := time.Now().UnixNano()
	m.d.mu.RLock()
	v, ok := m.d.value(key, now)
	m.d.mu.RUnlock()
	if !ok {
		// A set (AddMember) has no value to get.
		return nil, ErrNotFound
	}
	if v == "" {
		return nil, nil
	}
	b, err := unpack(make([]byte, 0, unpackedLen(v)), v)
	if err != nil {
		return nil, fmt.Errorf("reading the memory store: %w", err)
	}
	return b, nil
}

// Set implements Store. A ttl of zero or less deletes key.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	defer m.records.forget(key)
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	m.d.write(key, value, now, ttl)
	return nil
}

// SetNX implements Store. A set at key counts as present.
func (m *Memory) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	if ttl <= 0 {
		return false, nil
	}
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if m.d.has(key, now) {
		return false, nil
	}
	m.d.put(key, value, now, ttl)
	return true, nil
}

// Replace implements Store. A set at key counts as present.
func (m *Memory) Replace(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if !m.d.has(key, now) {
		return false, nil
	}
	m.d.write(key, value, now, ttl)
	return true, nil
}

// Swap implements Store.
func (m *Memory) Swap(_ context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if cur, ok := m.d.value(key, now); !ok || !holds(cur, old) {
		return false, nil
	}
	m.d.write(key, value, now, ttl)
	return true, nil
}

// holds reports whether the packed value p is v.
func holds(p string, v []byte) bool {
	if len(p) > 0 && p[0] == packRaw {
		return p[1:] == string(v)
	}
	if unpackedLen(p) != len(v) {
		return false
	}
	var buf [1024]byte
	u, err := unpack(buf[:0], p)
	return err == nil && string(u) == string(v)
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	defer m.records.forget(key)
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	m.d.drop(key)
	return nil
}

// AddMember implements Store. A set is a *memberSet, kept until its latest
// member's time. A member whose time has passed is not added: it would
// make a set with no time left.
func (m *Memory) AddMember(_ context.Context, key, member string, until, now time.Time, limit int) ([]string, error) {
	if !until.After(now) {
		return nil, nil
	}
	clock := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	s := m.d.set(key, clock)
	if s == nil {
		s = &memberSet{}
		delete(m.d.values, key)
		m.d.sets[strings.Clone(key)] = s
	}
	s.prune(now.UnixNano())
	s.add(member, unixNano(until), m.d.own)
	// Kept by the store's clock for as long as the latest member has by
	// the caller's.
	s.exp = after(clock, s.last-now.UnixNano())
	return s.over(limit, member), nil
}

// Members implements Store.
func (m *Memory) Members(_ context.Context, key string) ([]string, error) {
	now := time.Now().UnixNano()
	m.d.mu.RLock()
	defer m.d.mu.RUnlock()
	if s := m.d.set(key, now); s != nil {
		return s.names(), nil
	}
	return nil, nil
}

// RemoveMember implements Store.
func (m *Memory) RemoveMember(_ context.Context, key, member string) error {
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	s := m.d.set(key, now)
	if s == nil {
		return nil
	}
	s.remove(member)
	if s.len() == 0 {
		delete(m.d.sets, key)
	}
	return nil
}

// Count returns how many unexpired keys start with prefix.
func (m *Memory) Count(prefix string) int {
	now := time.Now().UnixNano()
	m.d.mu.RLock()
	defer m.d.mu.RUnlock()
	n := 0
	for k, e := range m.d.values {
		if now <= e.exp && strings.HasPrefix(k, prefix) {
			n++
		}
	}
	for k, s := range m.d.sets {
		if now <= s.exp && strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
