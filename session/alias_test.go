package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// aliased returns a string that shares b's bytes, as fiber's c.Get and
// c.Cookies do with fasthttp's request buffer: changing b changes it.
func aliased(b []byte) string { return unsafe.String(&b[0], len(b)) }

// overwrite puts a different string of the same length into b.
func overwrite(b []byte) {
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
}

// TestIssuerOwnsWhatItKeeps: a token authenticated from a request buffer
// that is then reused for a forgery of the same length must not make the
// forgery valid (the verified-token cache must not key on the caller's
// bytes).
func TestIssuerOwnsWhatItKeeps(t *testing.T) {
	is, _ := newIssuer(t, ES256)
	ctx := context.Background()
	pair, err := is.Login(ctx, Identity{OpenID: "o-alice", AppID: "wx1", Scope: "miniprogram"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte(pair.AccessToken)
	if _, err := is.Authenticate(ctx, aliased(buf)); err != nil {
		t.Fatalf("Authenticate(valid) = %v", err)
	}
	overwrite(buf)
	forged := string(buf)
	if f, err := is.Authenticate(ctx, forged); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Authenticate(forgery after buffer reuse) = %v, %v; want ErrInvalidToken", f, err)
	}
	f, err := is.Authenticate(ctx, pair.AccessToken)
	if err != nil || f.Identity.OpenID != "o-alice" {
		t.Fatalf("Authenticate(valid, again) = %v, %v; want alice", f, err)
	}
}

// TestManagerGetOwnsTheID: a session read with an ID from a request buffer
// keeps its own copy of the ID.
func TestManagerGetOwnsTheID(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	s, err := m.Create(ctx, Identity{OpenID: "o1", AppID: "wx1", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte(s.ID)
	got, err := m.Get(ctx, aliased(buf))
	if err != nil {
		t.Fatal(err)
	}
	overwrite(buf)
	if got.ID != s.ID {
		t.Errorf("Get(id).ID changed with the caller's buffer: %q, want %q", got.ID, s.ID)
	}
}

// FuzzSessionCookie: no cookie value (or callback state) makes the session
// (or pending login) lookup panic, and none but the session's own ID (or
// the login's own state) finds it.
func FuzzSessionCookie(f *testing.F) {
	m := NewManager(NewMemory(0), Config{TTL: time.Hour, IdleTTL: time.Hour})
	s, err := m.Create(context.Background(), Identity{OpenID: "o1", AppID: "wx1", Scope: "snsapi_base"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	state := NewState()
	if err := m.SavePending(context.Background(), state, &Pending{ReturnURL: "/", Scope: "snsapi_base", Flow: "oa", Binding: Hash("b")}); err != nil {
		f.Fatal(err)
	}
	f.Add(state[:31] + "A")
	f.Add(s.ID[:len(s.ID)-1] + "A")
	f.Add(s.ID + "=")
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, id string) {
		if p, err := m.Pending(context.Background(), id); id != state && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Pending(%q) = %v, %v; want ErrNotFound", id, p, err)
		}
		got, err := m.Get(context.Background(), id)
		if id == s.ID {
			return
		}
		if err == nil || !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%q) = %v, %v; want ErrNotFound", id, got, err)
		}
	})
}
