package session

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// snapshotEntry is one stored value in a snapshot file.
type snapshotEntry struct {
	Value   []byte    `json:"v"`
	Expires time.Time `json:"e"`
}

// SaveSnapshot writes every unexpired entry to path (mode 0600; written to
// a temporary file and renamed, so a crash leaves the old snapshot whole).
// The file holds session tokens: keep it as private as the store.
func (m *Memory) SaveSnapshot(path string) (int, error) {
	items := m.c.Items()
	out := make(map[string]snapshotEntry, len(items))
	for k, it := range items {
		b, ok := it.Object.([]byte)
		if !ok || it.Expiration == 0 {
			continue
		}
		out[k] = snapshotEntry{Value: b, Expires: time.Unix(0, it.Expiration)}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("writing snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snapshot-*")
	if err != nil {
		return 0, fmt.Errorf("writing snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("writing snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("writing snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("writing snapshot: %w", err)
	}
	return len(out), nil
}

// LoadSnapshot reads a snapshot written by SaveSnapshot, dropping entries
// that expired meanwhile. A missing file loads nothing and is not an error.
func (m *Memory) LoadSnapshot(path string) (int, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading snapshot: %w", err)
	}
	var in map[string]snapshotEntry
	if err := json.Unmarshal(b, &in); err != nil {
		return 0, fmt.Errorf("reading snapshot %s: %w", path, err)
	}
	n := 0
	for k, e := range in {
		if ttl := time.Until(e.Expires); ttl > 0 {
			m.c.Set(k, e.Value, ttl)
			n++
		}
	}
	return n, nil
}
