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

// TestMemoryMembersOwned: a member name is the store's copy, whether made
// for it or shared with the name before it (own), never the caller's
// buffer.
func TestMemoryMembersOwned(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(0)
	now := time.Now()
	adds := []struct{ key, member string }{
		{"idx:user:o1", "s:key-AAAA"},
		{"idx:user:u1", "s:key-AAAA"}, // the same name
		{"idx:tokens", "key-AAAA"},    // a suffix of it
		{"idx:other", "AAAA-other"},   // neither
	}
	for _, a := range adds {
		buf := []byte(a.member)
		if _, err := m.AddMember(ctx, a.key, aliased(buf), now.Add(time.Hour), now, 0); err != nil {
			t.Fatal(err)
		}
		overwrite(buf)
	}
	for _, a := range adds {
		if got, _ := m.Members(ctx, a.key); len(got) != 1 || got[0] != a.member {
			t.Errorf("Members(%s) = %q, want [%s]", a.key, got, a.member)
		}
	}
}
