package session

import "context"

// What some stores can do besides Store. The Manager finds it through the
// wrappers in front of the store (Observe), each of which has Unwrap.
type (
	// Pinger is a store that can be down: Redis.
	Pinger interface{ Ping(context.Context) error }
	// Closer is a store holding connections or goroutines: Redis.
	Closer interface{ Close() error }
	// Counter is a store that can count its keys cheaply: memory.
	Counter interface{ Count(prefix string) int }
	// Snapshotter is a store kept in this process that can be written to
	// a file at shutdown: memory (snapshot.go).
	Snapshotter interface {
		SaveSnapshot(path string, as Origin) (int, error)
	}
)

// find returns the first store of type T in the chain from s through the
// wrappers' Unwrap.
func find[T any](s Store) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Count returns the number of live sessions when the store can count them
// (the memory store), and -1 otherwise.
func (m *Manager) Count() int {
	if c, ok := find[Counter](m.store); ok {
		return c.Count(sessionPrefix)
	}
	return -1
}

// Ping reports whether the store answers. A store that cannot be down
// (memory) always does.
func (m *Manager) Ping(ctx context.Context) error {
	if p, ok := find[Pinger](m.store); ok {
		return p.Ping(ctx)
	}
	return nil
}

// SaveSnapshot writes the store to path as a gateway started as as, if the
// store keeps snapshots (memory), and reports how many entries it wrote
// and whether it did.
func (m *Manager) SaveSnapshot(path string, as Origin) (n int, saved bool, err error) {
	sn, ok := find[Snapshotter](m.store)
	if !ok {
		return 0, false, nil
	}
	n, err = sn.SaveSnapshot(path, as)
	return n, err == nil, err
}

// Close closes the store, if it holds anything to close. The Manager is
// not used after.
func (m *Manager) Close() error {
	if c, ok := find[Closer](m.store); ok {
		return c.Close()
	}
	return nil
}
