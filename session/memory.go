package session

import (
	"context"
	"strings"
	"time"

	"github.com/patrickmn/go-cache"
)

// Memory is a Store in process memory (go-cache). Values are copied in and
// out, so callers may reuse their buffers. It suits one replica; several
// replicas need a shared store.
type Memory struct {
	c *cache.Cache
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
	m.c.Set(key, append([]byte(nil), value...), ttl)
	return nil
}

// SetNX implements Store.
func (m *Memory) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, nil
	}
	// go-cache's Add checks and sets under its own lock.
	err := m.c.Add(key, append([]byte(nil), value...), ttl)
	return err == nil, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.c.Delete(key)
	return nil
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
