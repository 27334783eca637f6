package session

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
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

// BenchmarkAddMember is one more login of a person who already has n (at
// the cap of n): AddMember, then removing the login it pushes out. Issue 9:
// the cost must not grow with n (the memory store rewrote the whole set).
func BenchmarkAddMember(b *testing.B) {
	stores := map[string]func(b *testing.B) Store{
		"memory": func(*testing.B) Store { return NewMemory(0) },
		"redis": func(b *testing.B) Store {
			srv := redistest.Start(b, "--appendonly", "no")
			r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}}, make([]byte, 32))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { r.Close() })
			return r
		},
	}
	ctx := context.Background()
	for _, name := range []string{"memory", "redis"} {
		for _, n := range []int{100, 6000} {
			b.Run(fmt.Sprintf("%s/members=%d", name, n), func(b *testing.B) {
				s := stores[name](b)
				t0 := time.Now()
				i := 0
				add := func() {
					now := t0.Add(time.Duration(i) * time.Millisecond)
					over, err := s.AddMember(ctx, "idx:user:bench", "s:"+strconv.Itoa(i), now.Add(time.Hour), now, n)
					if err != nil {
						b.Fatal(err)
					}
					for _, o := range over {
						if err := s.RemoveMember(ctx, "idx:user:bench", o); err != nil {
							b.Fatal(err)
						}
					}
					i++
				}
				for range n {
					add()
				}
				b.ReportAllocs()
				for b.Loop() {
					add()
				}
			})
		}
	}
}
