package session

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSnapshot(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(0)
	_ = m.Set(ctx, "long", []byte("kept"), time.Hour)
	_ = m.Set(ctx, "short", []byte("gone"), 20*time.Millisecond)
	_, _ = m.AddMember(ctx, "set", "x", time.Now().Add(time.Hour), time.Now(), 0)
	path := t.TempDir() + "/sub/snapshot.json"
	if n, err := m.SaveSnapshot(path, OriginServe); err != nil || n != 3 {
		t.Fatalf("SaveSnapshot = %d, %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := m.Get(ctx, "short"); errors.Is(err, ErrNotFound) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	m2 := NewMemory(0)
	n, err := m2.LoadSnapshot(path, OriginServe)
	if err != nil || n != 2 {
		t.Fatalf("LoadSnapshot = %d, %v; want the 2 unexpired entries", n, err)
	}
	if v, err := m2.Get(ctx, "long"); err != nil || string(v) != "kept" {
		t.Errorf("after load: %q %v", v, err)
	}
	if got, _ := m2.Members(ctx, "set"); len(got) != 1 {
		t.Errorf("set after load: %v", got)
	}
	// Consumed: after a crash the next start must not find it (issue 8).
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after LoadSnapshot(%s): stat = %v, want the file gone", path, err)
	}
	if n, err := NewMemory(0).LoadSnapshot(path, OriginServe); n != 0 || err != nil {
		t.Errorf("LoadSnapshot again = %d, %v; want 0, nil", n, err)
	}
	if n, err := NewMemory(0).LoadSnapshot(t.TempDir()+"/missing", OriginServe); n != 0 || err != nil {
		t.Errorf("missing snapshot: %d %v", n, err)
	}
}

// TestSnapshotEnvelope: the file says what it is, who wrote it and when.
func TestSnapshotEnvelope(t *testing.T) {
	m := NewMemory(0)
	_ = m.Set(context.Background(), "k", []byte("v"), time.Hour)
	path := filepath.Join(t.TempDir(), "snapshot")
	before := time.Now().Add(-time.Second)
	if _, err := m.SaveSnapshot(path, OriginDev); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Format  string                     `json:"format"`
		Origin  string                     `json:"origin"`
		Written string                     `json:"written"`
		Entries map[string]json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	written, err := time.Parse(time.RFC3339, env.Written)
	if env.Format != "wxgate-snapshot/2" || env.Origin != "dev" || err != nil || written.Before(before) || len(env.Entries) != 1 || env.Entries["k"] == nil {
		t.Errorf("snapshot file = %s; want format wxgate-snapshot/2, origin dev, written now (RFC 3339), entry k", b)
	}
}

// TestSnapshotOrigin: serve loads only what serve wrote, and leaves what it
// refuses in place; dev loads anything, its own legacy files included.
func TestSnapshotOrigin(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	// legacy is the format before wxgate-snapshot/1: a bare map of entries.
	legacy := `{"sess:k":{"v":"c2VjcmV0LXNlc3Npb24=","e":"` + future + `"}}`
	saved := func(o Origin) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			m := NewMemory(0)
			_ = m.Set(context.Background(), "sess:k", []byte("secret-session"), time.Hour)
			if _, err := m.SaveSnapshot(path, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	written := func(s string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
		as    Origin
		// refused is the OriginError's Origin ("" for a legacy file);
		// only read when wantErr is "origin".
		refused Origin
		// wantErr: "" (loads one entry), "origin" (an *OriginError), or
		// "other" (another error).
		wantErr string
	}{
		{"serve loads serve", saved(OriginServe), OriginServe, "", ""},
		{"dev loads dev", saved(OriginDev), OriginDev, "", ""},
		{"dev loads serve", saved(OriginServe), OriginDev, "", ""},
		{"dev loads legacy", written(legacy), OriginDev, "", ""},
		{"serve refuses dev", saved(OriginDev), OriginServe, OriginDev, "origin"},
		{"serve refuses legacy", written(legacy), OriginServe, "", "origin"},
		{"unknown origin", written(`{"format":"wxgate-snapshot/1","origin":"staging","written":"` + future + `","entries":{}}`), OriginServe, "", "other"},
		{"unknown format", written(`{"format":"wxgate-snapshot/3","origin":"serve","written":"` + future + `","entries":{}}`), OriginServe, "", "other"},
		{"not JSON", written(`sess:k=1`), OriginDev, "", "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "sessions.snapshot")
			tc.write(t, path)
			m := NewMemory(0)
			n, err := m.LoadSnapshot(path, tc.as)
			_, statErr := os.Stat(path)
			var oe *OriginError
			switch tc.wantErr {
			case "":
				if err != nil || n != 1 {
					t.Fatalf("LoadSnapshot(%s) = %d, %v; want 1, nil", tc.as, n, err)
				}
				if v, _ := m.Get(context.Background(), "sess:k"); string(v) != "secret-session" {
					t.Errorf("entry after load = %q, want secret-session", v)
				}
				if !errors.Is(statErr, fs.ErrNotExist) {
					t.Errorf("after loading, stat = %v; want the file consumed", statErr)
				}
				return
			case "origin":
				if !errors.As(err, &oe) || oe.Origin != tc.refused || oe.Path != path || oe.Item != "snapshot" {
					t.Fatalf("LoadSnapshot(%s) = %d, %v; want an OriginError for %s with origin %q", tc.as, n, err, path, tc.refused)
				}
				if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "wxgate dev") || !strings.Contains(msg, "delete the file") || strings.Contains(msg, "\n") {
					t.Errorf("error %q: want one line naming the file, wxgate dev and what to do", msg)
				}
			case "other":
				if err == nil || errors.As(err, &oe) {
					t.Fatalf("LoadSnapshot(%s) = %d, %v; want an error other than OriginError", tc.as, n, err)
				}
			}
			if strings.Contains(err.Error(), "secret-session") || strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("error %q carries a stored value", err)
			}
			if n != 0 || m.Count("") != 0 {
				t.Errorf("refused load restored %d entries (store holds %d)", n, m.Count(""))
			}
			if statErr != nil {
				t.Errorf("refused file: stat = %v; want it left in place", statErr)
			}
		})
	}
}

// TestLoadSnapshotUnremovable: a snapshot that cannot be removed would be
// read again after a crash, bringing back logouts and revocations made
// since; so the load fails instead.
func TestLoadSnapshotUnremovable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "sessions.snapshot")
	m := NewMemory(0)
	_ = m.Set(context.Background(), "sess:k", []byte("v"), time.Hour)
	if _, err := m.SaveSnapshot(path, OriginServe); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o600); err == nil {
		t.Skip("a read-only directory does not stop this user (root) from removing files")
	}
	m2 := NewMemory(0)
	n, err := m2.LoadSnapshot(path, OriginServe)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("LoadSnapshot(%s in a read-only directory) = %d, %v; want a permission error", path, n, err)
	}
	if m2.Count("") != 0 {
		t.Errorf("failed load left %d entries in the store", m2.Count(""))
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("stat = %v; the snapshot should still be there", err)
	}
}

// TestSnapshotSets: a set round-trips with each member's own time, so the
// indexes restored after a graceful restart still drop each login at its
// end; a wxgate-snapshot/1 file's sets (JSON lists) still load, each member
// kept as long as its set was.
func TestSnapshotSets(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	m := NewMemory(0)
	_, _ = m.AddMember(ctx, "idx:user:o1", "s:a", now.Add(time.Hour), now, 0)
	_, _ = m.AddMember(ctx, "idx:user:o1", "s:b", now.Add(2*time.Hour), now, 0)
	path := filepath.Join(t.TempDir(), "snapshot")
	if _, err := m.SaveSnapshot(path, OriginServe); err != nil {
		t.Fatal(err)
	}
	m2 := NewMemory(0)
	if _, err := m2.LoadSnapshot(path, OriginServe); err != nil {
		t.Fatal(err)
	}
	_, _ = m2.AddMember(ctx, "idx:user:o1", "s:c", now.Add(3*time.Hour), now.Add(90*time.Minute), 0)
	got, _ := m2.Members(ctx, "idx:user:o1")
	if slices.Sort(got); !slices.Equal(got, []string{"s:b", "s:c"}) {
		t.Errorf("restored set 90m later = %v, want [s:b s:c] (s:a ended at 1h)", got)
	}

	future := now.Add(time.Hour).UTC().Format(time.RFC3339)
	v1 := `{"format":"wxgate-snapshot/1","origin":"serve","written":"` + future + `","entries":{` +
		`"idx:user:o2":{"v":"WyJzOmEiLCJmOmIiXQ==","e":"` + future + `"},` + // ["s:a","f:b"]
		`"sess:a":{"v":"e30=","e":"` + future + `"}}}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	m3 := NewMemory(0)
	if n, err := m3.LoadSnapshot(path, OriginServe); n != 2 || err != nil {
		t.Fatalf("LoadSnapshot(wxgate-snapshot/1) = %d, %v; want 2, nil", n, err)
	}
	got, _ = m3.Members(ctx, "idx:user:o2")
	if slices.Sort(got); !slices.Equal(got, []string{"f:b", "s:a"}) {
		t.Errorf("set from a wxgate-snapshot/1 file = %v, want [f:b s:a]", got)
	}
	if v, err := m3.Get(ctx, "sess:a"); err != nil || string(v) != "{}" {
		t.Errorf("value from a wxgate-snapshot/1 file = %q, %v", v, err)
	}
}
