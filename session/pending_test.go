package session

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestPendingRoundTrip(t *testing.T) {
	created := time.Unix(1795433000, 0)
	tests := []struct {
		name string
		p    Pending
	}{
		{"base", Pending{ReturnURL: "/orders/7?x=1", Scope: "snsapi_base", Flow: "oa", Binding: Hash("b1"), Created: created}},
		{"userinfo restarted", Pending{ReturnURL: "/profile/", Scope: "snsapi_userinfo", Flow: "oa", Binding: Hash("b2"), Attempt: 1, Created: created}},
		{"qr", Pending{ReturnURL: "https://app.example.com/a", Scope: "snsapi_login", Flow: "qr", Binding: Hash("b3"), Created: created}},
		{"empty rd", Pending{Scope: "snsapi_base", Flow: "oa", Binding: Hash("b4"), Created: created}},
		{"2 KiB rd", Pending{ReturnURL: "/" + strings.Repeat("a", 2047), Scope: "snsapi_base", Flow: "oa", Binding: Hash("b5"), Created: created}},
		{"handoff", Pending{ReturnURL: "https://a.example.com/x", Scope: "snsapi_base", Flow: "oa", Binding: Hash("b6"), Handoff: Hash("h6"), Created: created}},
		{"handoff empty rd", Pending{Scope: "snsapi_login", Flow: "qr", Binding: Hash("b7"), Handoff: Hash("h7"), Created: created}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.p.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			want := pendingHead + len(tc.p.ReturnURL)
			if tc.p.Handoff != "" {
				want += 32
			}
			if len(b) != want {
				t.Errorf("record is %d bytes, want %d", len(b), want)
			}
			var got Pending
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if got != tc.p {
				t.Errorf("round trip = %+v, want %+v", got, tc.p)
			}
		})
	}
}

func TestPendingRefusesMalformed(t *testing.T) {
	good, _ := (&Pending{ReturnURL: "/", Scope: "snsapi_base", Flow: "oa", Binding: Hash("b")}).MarshalBinary()
	mutate := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	for name, b := range map[string][]byte{
		"empty":   nil,
		"short":   good[:pendingHead-1],
		"version": mutate(0, 3),
		// A version 1 record read as version 2 is too short for the handoff.
		"version 2 short": mutate(0, 2),
		"scope":           mutate(1, byte(len(pendingScopes))),
		"flow":            mutate(2, 0xff),
		"bad JSON form":   []byte(`{"rd":`),
	} {
		var p Pending
		if err := p.UnmarshalBinary(b); err == nil {
			t.Errorf("UnmarshalBinary(%s) = %+v, nil; want an error", name, p)
		}
	}
	for name, p := range map[string]Pending{
		"scope":   {Scope: "snsapi_other", Flow: "oa", Binding: Hash("b")},
		"flow":    {Scope: "snsapi_base", Flow: "mp", Binding: Hash("b")},
		"binding": {Scope: "snsapi_base", Flow: "oa", Binding: "not a hash"},
		"attempt": {Scope: "snsapi_base", Flow: "oa", Binding: Hash("b"), Attempt: 256},
		"handoff": {Scope: "snsapi_base", Flow: "oa", Binding: Hash("b"), Handoff: "not a hash"},
	} {
		if _, err := p.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(bad %s) = nil error", name)
		}
	}
}

// TestPendingReadsJSON: logins started before the compact form was
// introduced still complete after an upgrade.
func TestPendingReadsJSON(t *testing.T) {
	want := Pending{ReturnURL: "/x", Scope: "snsapi_userinfo", Flow: "oa", Binding: Hash("b"), Attempt: 1, Created: time.Unix(1795433000, 0).UTC()}
	b, _ := json.Marshal(want)
	var got Pending
	if err := got.UnmarshalBinary(b); err != nil || got != want {
		t.Errorf("UnmarshalBinary(JSON) = %+v, %v; want %+v", got, err, want)
	}
}

// TestPendingLoginsAreCheap holds 100,000 pending logins with a typical
// return URL in the memory store and checks they take less than 32 MiB:
// what a replica holds when max_pending logins are in flight.
func TestPendingLoginsAreCheap(t *testing.T) {
	const n, limit = 100_000, 32 << 20
	m := NewManager(NewMemory(0), Config{TTL: time.Hour, IdleTTL: time.Hour})
	ctx := context.Background()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := 0; i < n; i++ {
		p := &Pending{ReturnURL: "/orders/12345?from=menu", Scope: "snsapi_base", Flow: "oa", Binding: Hash(NewID())}
		if err := m.SavePending(ctx, NewState(), p); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("%d pending logins: %.1f MiB, %d bytes each", n, float64(grew)/(1<<20), grew/n)
	if grew > limit {
		t.Errorf("%d pending logins take %.1f MiB, over %d MiB", n, float64(grew)/(1<<20), limit>>20)
	}
	if got := m.store.(*Memory).Count(pendingPrefix); got != n {
		t.Fatalf("%d pending logins stored, want %d", got, n)
	}
}

// FuzzPendingRecord: no record read from a store makes the decoder panic,
// and whatever it accepts encodes back to something it reads the same.
func FuzzPendingRecord(f *testing.F) {
	good, _ := (&Pending{ReturnURL: "/a?b", Scope: "snsapi_userinfo", Flow: "qr", Binding: Hash("b"), Attempt: 1}).MarshalBinary()
	f.Add(good)
	f.Add([]byte(`{"rd":"/","scope":"snsapi_base","flow":"oa"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Pending
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := p.MarshalBinary()
		if err != nil {
			return // a JSON record may name what the binary form cannot hold
		}
		var q Pending
		if err := q.UnmarshalBinary(again); err != nil || q.ReturnURL != p.ReturnURL || q.Scope != p.Scope || q.Flow != p.Flow || q.Binding != p.Binding || q.Created.Unix() != p.Created.Unix() {
			t.Fatalf("re-encoded %+v reads as %+v, %v", p, q, err)
		}
	})
}
