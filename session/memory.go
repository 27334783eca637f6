package session

import (
	"context"
	"encoding/json"
	"slices"
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
	// sets serializes the read-modify-write of set members.
	sets sync.Mutex
}

// NewMemory returns an empty memory store whose janitor drops expired
// entries every cleanup interval (0 means one minute).
func NewMemory(cleanup time.Duration) *Memory {
	if cleanup <= 0 {
		cleanup = time.Minute
	}
	return &Memory{c: cache.New(cache.NoExpiration, cleanup)}
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) ([]byte, error) {
	v, ok := m.c.Get(key)
	if !ok {
		return nil, ErrNotFound
	}
	b := v.([]byte)
	return append([]byte(nil), b...), nil
}

// Set implements Store. A ttl of zero or less deletes key: go-cache would
// otherwise keep it forever.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		m.c.Delete(key)
		return nil
	}
	m.c.Set(strings.Clone(key), append([]byte(nil), value...), ttl)
	return nil
}

// SetNX implements Store.
func (m *Memory) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, nil
	}
	// go-cache's Add checks and sets under its own lock.
	err := m.c.Add(strings.Clone(key), append([]byte(nil), value...), ttl)
	return err == nil, nil
}

// Replace implements Store. go-cache's Replace checks and sets under its
// own lock, so a concurrent Delete is either before (nothing stored) or
// after.
func (m *Memory) Replace(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		_, ok := m.c.Get(key)
		m.c.Delete(key)
		return ok, nil
	}
	// Cloned: Go replaces a string map key with the caller's on update.
	err := m.c.Replace(strings.Clone(key), append([]byte(nil), value...), ttl)
	return err == nil, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.c.Delete(key)
	return nil
}

// AddMember implements Store. The set's expiry only ever grows.
func (m *Memory) AddMember(_ context.Context, key, member string, ttl time.Duration) error {
	m.sets.Lock()
	defer m.sets.Unlock()
	members, exp := m.members(key)
	if !slices.Contains(members, member) {
		members = append(members, member)
	}
	if until := time.Now().Add(ttl); until.After(exp) {
		exp = until
	}
	b, _ := json.Marshal(members)
	m.c.Set(strings.Clone(key), b, time.Until(exp))
	return nil
}

// Members implements Store.
func (m *Memory) Members(_ context.Context, key string) ([]string, error) {
	m.sets.Lock()
	defer m.sets.Unlock()
	members, _ := m.members(key)
	return members, nil
}

// RemoveMember implements Store.
func (m *Memory) RemoveMember(_ context.Context, key, member string) error {
	m.sets.Lock()
	defer m.sets.Unlock()
	members, exp := m.members(key)
	members = slices.DeleteFunc(members, func(s string) bool { return s == member })
	if len(members) == 0 {
		m.c.Delete(key)
		return nil
	}
	b, _ := json.Marshal(members)
	m.c.Set(key, b, time.Until(exp))
	return nil
}

// members decodes a set and its expiry. Callers hold m.sets.
func (m *Memory) members(key string) ([]string, time.Time) {
	v, exp, ok := m.c.GetWithExpiration(key)
	if !ok {
		return nil, time.Time{}
	}
	var members []string
	_ = json.Unmarshal(v.([]byte), &members)
	return members, exp
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
