package session

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/patrickmn/go-cache"
)

// Memory is a Store in process memory (go-cache). Keys and values are
// copied in and values out, so callers may reuse their buffers (a key read
// from a request must not change under the map). It suits one replica; several
// replicas need Redis. SaveSnapshot and LoadSnapshot carry it across a
// graceful restart (snapshot.go).
type Memory struct {
	c *cache.Cache
	// sets guards every *memberSet in c (AddMember changes them in place).
	sets sync.Mutex
	// values orders the writes of plain values, so that Swap's compare and
	// store are one step to every other writer.
	values sync.Mutex
	// records keeps the sessions and token families read lately decoded;
	// every write drops what it writes (cache.go).
	records *recordCache
}

// NewMemory returns an empty memory store whose janitor drops expired
// entries every cleanup interval (0 means one minute).
func NewMemory(cleanup time.Duration) *Memory {
	if cleanup <= 0 {
		cleanup = time.Minute
	}
	m := &Memory{c: cache.New(cache.NoExpiration, cleanup)}
	m.records = newRecordCache(m.Get, nil)
	return m
}

func (m *Memory) load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	return m.records.load(ctx, key, decode)
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) ([]byte, error) {
	v, ok := m.c.Get(key)
	if !ok {
		return nil, ErrNotFound
	}
	b, ok := v.([]byte)
	if !ok {
		// A set (AddMember) has no value to get.
		return nil, ErrNotFound
	}
	return append([]byte(nil), b...), nil
}

// Set implements Store. A ttl of zero or less deletes key: go-cache would
// otherwise keep it forever.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	defer m.records.forget(key)
	m.values.Lock()
	defer m.values.Unlock()
	if ttl <= 0 {
		m.c.Delete(key)
		return nil
	}
	m.c.Set(strings.Clone(key), append([]byte(nil), value...), ttl)
	return nil
}

// SetNX implements Store.
func (m *Memory) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	if ttl <= 0 {
		return false, nil
	}
	// go-cache's Add checks and sets under its own lock; values orders it
	// with Swap.
	m.values.Lock()
	defer m.values.Unlock()
	err := m.c.Add(strings.Clone(key), append([]byte(nil), value...), ttl)
	return err == nil, nil
}

// Replace implements Store. go-cache's Replace checks and sets under its
// own lock, so a concurrent Delete is either before (nothing stored) or
// after.
func (m *Memory) Replace(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	m.values.Lock()
	defer m.values.Unlock()
	if ttl <= 0 {
		_, ok := m.c.Get(key)
		m.c.Delete(key)
		return ok, nil
	}
	// Cloned: Go replaces a string map key with the caller's on update.
	err := m.c.Replace(strings.Clone(key), append([]byte(nil), value...), ttl)
	return err == nil, nil
}

// Swap implements Store.
func (m *Memory) Swap(_ context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	defer m.records.forget(key)
	m.values.Lock()
	defer m.values.Unlock()
	v, ok := m.c.Get(key)
	if cur, isValue := v.([]byte); !ok || !isValue || !bytes.Equal(cur, old) {
		return false, nil
	}
	if ttl <= 0 {
		m.c.Delete(key)
		return true, nil
	}
	return m.c.Replace(strings.Clone(key), append([]byte(nil), value...), ttl) == nil, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	defer m.records.forget(key)
	m.values.Lock()
	defer m.values.Unlock()
	m.c.Delete(key)
	return nil
}

// AddMember implements Store. A set is a *memberSet in the cache, kept
// until its latest member's time. A member whose time has passed is not
// added: go-cache would keep a set with no time left for ever.
func (m *Memory) AddMember(_ context.Context, key, member string, until, now time.Time, limit int) ([]string, error) {
	if !until.After(now) {
		return nil, nil
	}
	m.sets.Lock()
	defer m.sets.Unlock()
	s := m.set(key)
	if s == nil {
		s = &memberSet{}
	}
	s.prune(now.UnixNano())
	s.add(member, until.UnixNano())
	over := s.over(limit, member)
	m.c.Set(strings.Clone(key), s, time.Duration(s.last-now.UnixNano()))
	return over, nil
}

// Members implements Store.
func (m *Memory) Members(_ context.Context, key string) ([]string, error) {
	m.sets.Lock()
	defer m.sets.Unlock()
	if s := m.set(key); s != nil {
		return s.names(), nil
	}
	return nil, nil
}

// RemoveMember implements Store.
func (m *Memory) RemoveMember(_ context.Context, key, member string) error {
	m.sets.Lock()
	defer m.sets.Unlock()
	s := m.set(key)
	if s == nil {
		return nil
	}
	s.remove(member)
	if s.len() == 0 {
		m.c.Delete(key)
	}
	return nil
}

// set returns the set at key, or nil. Callers hold m.sets.
func (m *Memory) set(key string) *memberSet {
	v, ok := m.c.Get(key)
	if !ok {
		return nil
	}
	s, _ := v.(*memberSet)
	return s
}

// Count returns how many unexpired keys start with prefix.
func (m *Memory) Count(prefix string) int {
	n := 0
	for k := range m.c.Items() {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
