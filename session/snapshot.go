package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// snapshotFormat is the format of the snapshot files this version writes
// and reads (grep: wxgate-snapshot/2). /2 (issue 9) stores sets as members
// with their times; a gateway from before would read them as empty sets, so
// the number changed: it refuses the file rather than lose every person's
// index. /1 files are still read, their sets converted (snapshotFormatV1).
const snapshotFormat = "wxgate-snapshot/2"

// snapshotFormatV1 is the format before sets had times per member: a set
// was a JSON list of its members, all kept as long as the set.
const snapshotFormatV1 = "wxgate-snapshot/1"

// snapshotFile is a snapshot file: the entries in an envelope that says
// which command wrote them, and when (issue 8). Files from before the
// envelope are the bare entries map, with no format.
type snapshotFile struct {
	Format  string                   `json:"format"`
	Origin  Origin                   `json:"origin"`
	Written time.Time                `json:"written"`
	Entries map[string]snapshotEntry `json:"entries"`
}

// snapshotEntry is one stored value, or one set, in a snapshot file.
type snapshotEntry struct {
	Value   []byte    `json:"v,omitempty"`
	Expires time.Time `json:"e"`
	// Set holds a set's members with their times in unix nanoseconds
	// (AddMember); nil for a value.
	Set map[string]int64 `json:"s,omitempty"`
}

// SaveSnapshot writes every unexpired entry to path, recording origin as
// the command that wrote it (mode 0600; written to a temporary file and
// renamed, so a crash while writing leaves no partial file). The file
// holds session tokens: keep it as private as the store.
func (m *Memory) SaveSnapshot(path string, origin Origin) (int, error) {
	if origin != OriginServe && origin != OriginDev {
		return 0, fmt.Errorf("writing snapshot: unknown origin %q", origin)
	}
	out := snapshotFile{
		Format:  snapshotFormat,
		Origin:  origin,
		Written: time.Now().UTC().Truncate(time.Second),
	}
	now := time.Now().UnixNano()
	m.d.mu.RLock()
	out.Entries = make(map[string]snapshotEntry, len(m.d.values)+len(m.d.sets))
	for k, e := range m.d.values {
		if now > e.exp {
			continue
		}
		v, err := unpack(nil, e.v)
		if err != nil {
			m.d.mu.RUnlock()
			return 0, fmt.Errorf("writing snapshot: %w", err)
		}
		out.Entries[k] = snapshotEntry{Value: v, Expires: time.Unix(0, e.exp)}
	}
	for k, s := range m.d.sets {
		if now > s.exp {
			continue
		}
		e := snapshotEntry{Expires: time.Unix(0, s.exp), Set: make(map[string]int64, s.len())}
		for name, until := range s.all() {
			e.Set[name] = until
		}
		out.Entries[k] = e
	}
	m.d.mu.RUnlock()
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
	return len(out.Entries), nil
}

// CheckSnapshot reports what LoadSnapshot would refuse in the snapshot at
// path, for a gateway started as as, and neither restores nor removes it:
// a missing file is no problem.
func CheckSnapshot(path string, as Origin) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	_, err = decodeSnapshot(path, b, as)
	return err
}

// LoadSnapshot reads a snapshot written by SaveSnapshot into m, dropping
// entries that expired meanwhile, and removes the file. A missing file
// loads nothing and is not an error.
//
// The snapshot is consumed (issue 8): left in place it would be read again
// after a crash (kill -9, the OOM killer), bringing back sessions logged
// out and token families revoked since it was read. So nothing older than
// the last graceful stop is ever restored, and a file that cannot be
// removed fails the load, leaving m as it was and the file in place.
//
// A gateway loading as OriginServe refuses, with an *OriginError and the
// file left in place, a snapshot that `wxgate dev` wrote (its logins are
// simulated) and one in the format from before wxgate-snapshot/1, which
// does not say who wrote it. OriginDev loads either.
func (m *Memory) LoadSnapshot(path string, as Origin) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading snapshot: %w", err)
	}
	entries, err := decodeSnapshot(path, b, as)
	if err != nil {
		return 0, err
	}
	// Removed before anything is restored: if it stays, nothing is.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("removing the snapshot after reading it (left in place, it would be restored again after a crash): %w", err)
	}
	n := 0
	now := time.Now().UnixNano()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	for k, e := range entries {
		ttl := time.Until(e.Expires)
		if ttl <= 0 {
			continue
		}
		if e.Set == nil {
			m.d.put(k, e.Value, now, ttl)
			n++
			continue
		}
		s := &memberSet{}
		for name, until := range e.Set {
			if until > now {
				s.add(name, until, m.d.own)
			}
		}
		if s.len() > 0 {
			s.exp = s.last
			m.d.drop(k)
			m.d.sets[k] = s
			n++
		}
	}
	return n, nil
}

// setsFromV1 converts the sets of a snapshot from before
// wxgate-snapshot/2, the indexes (keys "idx:..."), each a JSON list of
// members: every member is kept as long as its set was, which is no
// earlier than the end of what it names.
func setsFromV1(entries map[string]snapshotEntry) {
	for k, e := range entries {
		if !strings.HasPrefix(k, "idx:") {
			continue
		}
		var names []string
		if json.Unmarshal(e.Value, &names) != nil {
			continue
		}
		set := make(map[string]int64, len(names))
		for _, name := range names {
			set[name] = e.Expires.UnixNano()
		}
		entries[k] = snapshotEntry{Expires: e.Expires, Set: set}
	}
}

// decodeSnapshot parses a snapshot file and checks that a gateway loading
// as as may use it.
func decodeSnapshot(path string, b []byte, as Origin) (map[string]snapshotEntry, error) {
	var f snapshotFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("reading snapshot %s: %w", path, err)
	}
	if f.Format == "" {
		// The format before wxgate-snapshot/1: the bare entries, written
		// by dev or serve alike, to the same path.
		if as != OriginDev {
			return nil, &OriginError{Path: path, Item: "snapshot"}
		}
		var legacy map[string]snapshotEntry
		if err := json.Unmarshal(b, &legacy); err != nil {
			return nil, fmt.Errorf("reading snapshot %s: %w", path, err)
		}
		setsFromV1(legacy)
		return legacy, nil
	}
	switch f.Format {
	case snapshotFormat:
	case snapshotFormatV1:
		setsFromV1(f.Entries)
	default:
		return nil, fmt.Errorf("reading snapshot %s: format %q is not %s (or %s)", path, f.Format, snapshotFormat, snapshotFormatV1)
	}
	switch f.Origin {
	case OriginServe:
	case OriginDev:
		if as != OriginDev {
			return nil, &OriginError{Path: path, Item: "snapshot", Origin: OriginDev}
		}
	default:
		return nil, fmt.Errorf("reading snapshot %s: unknown origin %q", path, f.Origin)
	}
	return f.Entries, nil
}
