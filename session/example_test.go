package session_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/wxgate/wxgate/session"
)

func Example() {
	ctx := context.Background()
	cfg := session.Config{}
	cfg.SetDefaults()
	m := session.NewManager(session.NewMemory(0), cfg)

	s, _ := m.Create(ctx, session.Identity{OpenID: "oAlice", UnionID: "uAlice", Scope: "snsapi_base"}, nil)
	// s.ID goes into the cookie; the store only ever sees its hash.
	got, _ := m.Get(ctx, s.ID)
	fmt.Println("user:", got.Identity.User())

	_ = m.Delete(ctx, s.ID)
	_, err := m.Get(ctx, s.ID)
	fmt.Println("after delete:", errors.Is(err, session.ErrNotFound))
	_, err = m.Get(ctx, "tampered-cookie")
	fmt.Println("bad cookie:", errors.Is(err, session.ErrNotFound))
	// Output:
	// user: uAlice
	// after delete: true
	// bad cookie: true
}
