package session

import (
	"context"
	"testing"
	"time"
)

// TestMemoryJanitor: expired values and sets leave memory, not only the
// answers, and Count stops counting them at once.
func TestMemoryJanitor(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(10 * time.Millisecond)
	now := time.Now()
	if err := m.Set(ctx, "sess:short", []byte("v"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddMember(ctx, "idx:short", "s:1", now.Add(50*time.Millisecond), now, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, "sess:long", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	held := func() int {
		m.d.mu.RLock()
		defer m.d.mu.RUnlock()
		return len(m.d.values) + len(m.d.sets)
	}
	if got := held(); got != 3 {
		t.Fatalf("holding %d entries, want 3", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for held() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("5s after their end, %d expired entries are still held", held()-1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.Count(""); got != 1 {
		t.Errorf("Count = %d, want 1 (sess:long)", got)
	}
}

// TestMemoryCountSkipsExpired: what has expired but is still held (the
// janitor has not run) is not counted.
func TestMemoryCountSkipsExpired(t *testing.T) {
	ctx := context.Background()
	m := newMemory() // no janitor
	now := time.Now()
	for _, k := range []string{"sess:a", "sess:b", "login:c"} {
		if err := m.Set(ctx, k, []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.AddMember(ctx, "sess:set", "m", now.Add(time.Hour), now, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, "sess:gone", []byte("v"), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddMember(ctx, "sess:gone-set", "m", now.Add(time.Millisecond), now, 0); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	for time.Since(written) <= time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	if got := m.Count(sessionPrefix); got != 3 {
		t.Errorf("Count(%q) = %d, want 3 (a, b and set)", sessionPrefix, got)
	}
}
