package session

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSnapshot(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(0)
	_ = m.Set(ctx, "long", []byte("kept"), time.Hour)
	_ = m.Set(ctx, "short", []byte("gone"), 20*time.Millisecond)
	_ = m.AddMember(ctx, "set", "x", time.Hour)
	path := t.TempDir() + "/sub/snapshot.json"
	if n, err := m.SaveSnapshot(path); err != nil || n != 3 {
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
	n, err := m2.LoadSnapshot(path)
	if err != nil || n != 2 {
		t.Fatalf("LoadSnapshot = %d, %v; want the 2 unexpired entries", n, err)
	}
	if v, err := m2.Get(ctx, "long"); err != nil || string(v) != "kept" {
		t.Errorf("after load: %q %v", v, err)
	}
	if got, _ := m2.Members(ctx, "set"); len(got) != 1 {
		t.Errorf("set after load: %v", got)
	}
	if n, err := NewMemory(0).LoadSnapshot(t.TempDir() + "/missing"); n != 0 || err != nil {
		t.Errorf("missing snapshot: %d %v", n, err)
	}
}
