package session

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkAssertion compares a cached identity assertion (what every
// forwarded request pays) with signing a new one (what it would pay
// without the cache).
func BenchmarkAssertion(b *testing.B) {
	is, _ := newIssuer(b, ES256)
	id := &Identity{OpenID: "o1", UnionID: "u1", AppID: "wx1", Scope: "snsapi_base"}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := is.Assertion("h", id, "app"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signed", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := is.Assertion("h"+strconv.Itoa(i), id, "app"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAuthenticate compares a repeated access token (verified once,
// then cached) with verifying the signature every time.
func BenchmarkAuthenticate(b *testing.B) {
	is, _ := newIssuer(b, ES256)
	ctx := context.Background()
	p, err := is.Login(ctx, Identity{OpenID: "o1"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("repeat", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := is.Authenticate(ctx, p.AccessToken); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			is.verified.Flush()
			if _, err := is.Authenticate(ctx, p.AccessToken); err != nil {
				b.Fatal(err)
			}
		}
	})
}
