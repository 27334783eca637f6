package session

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTicketOnceUntilItsEnd(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1795433000, 0)
	m := NewManager(NewMemory(0), Config{TTL: time.Hour, IdleTTL: time.Hour})
	m.Now = func() time.Time { return now }
	id := Identity{OpenID: "o1", AppID: "wx1", Scope: "miniprogram"}
	raw, err := m.SaveTicket(ctx, &Ticket{Host: "a.example.com", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(raw) {
		t.Fatalf("ticket %q is not a 256-bit ID", raw)
	}
	got, err := m.Ticket(ctx, raw)
	if err != nil || got.Host != "a.example.com" || got.Identity != id {
		t.Fatalf("Ticket = %+v, %v", got, err)
	}
	// Twenty concurrent claims: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := m.ClaimTicket(ctx, raw); err != nil {
				t.Error(err)
			} else if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d claims won, want 1", wins.Load())
	}
	// Another ticket ends by the manager's clock, not the store's.
	raw2, err := m.SaveTicket(ctx, &Ticket{Host: "a.example.com", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(TicketTTL)
	if _, err := m.Ticket(ctx, raw2); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ticket at its end = %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "x", raw[:len(raw)-1], raw[:len(raw)-1] + "!", Hash(raw)} {
		if _, err := m.Ticket(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Ticket(%q) = %v, want ErrNotFound", bad, err)
		}
	}
	// The store keys the ticket by its hash: the raw ticket is nowhere in it.
	if _, err := m.store.Get(ctx, ticketPrefix+raw); !errors.Is(err, ErrNotFound) {
		t.Errorf("the raw ticket is a store key")
	}
}

// TestReleaseTicket: a claim given back can be won again, once; a used
// ticket stays used for everyone else meanwhile.
func TestReleaseTicket(t *testing.T) {
	ctx := context.Background()
	m := NewManager(NewMemory(0), Config{TTL: time.Hour, IdleTTL: time.Hour})
	raw, err := m.SaveTicket(ctx, &Ticket{Host: "a.example.com", Identity: Identity{OpenID: "o1", AppID: "wx1"}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := m.ClaimTicket(ctx, raw); !ok || err != nil {
		t.Fatalf("first claim: %v, %v", ok, err)
	}
	if ok, _ := m.ClaimTicket(ctx, raw); ok {
		t.Fatal("a second claim before the release won")
	}
	if err := m.ReleaseTicket(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.ClaimTicket(ctx, raw); !ok || err != nil {
		t.Fatalf("claim after the release: %v, %v", ok, err)
	}
	if ok, _ := m.ClaimTicket(ctx, raw); ok {
		t.Error("the ticket was won twice after one release")
	}
	if err := m.ReleaseTicket(ctx, "not a ticket"); err != nil {
		t.Errorf("releasing a malformed ticket: %v", err)
	}
}
