package session

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxgate/wxgate/internal/redistest"
)

// holdProxy forwards TCP to a Redis. While held, the answers on the
// connections it accepts from then on wait until release: a Redis slow
// to answer a new connection.
type holdProxy struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	hold     chan struct{} // nil: not holding
	accepted chan struct{} // a connection accepted while holding
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, accepted: make(chan struct{}, 16)}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		p.release()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			hold := p.hold
			p.mu.Unlock()
			if hold != nil {
				p.accepted <- struct{}{}
			}
			conns.Add(2)
			go func() { defer conns.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() {
				defer conns.Done()
				if hold != nil {
					<-hold
				}
				_, _ = io.Copy(c, s)
				_ = c.Close()
			}()
		}
	}()
	return p
}

func (p *holdProxy) Addr() string { return p.ln.Addr().String() }

func (p *holdProxy) holdNew() {
	p.mu.Lock()
	p.hold = make(chan struct{})
	p.mu.Unlock()
}

func (p *holdProxy) release() {
	p.mu.Lock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
	p.mu.Unlock()
}

// TestRedisCacheSubscriptionRedial: a replica's subscription is cut and
// its new connection is slow to come up (found by attack). A logout
// published meanwhile reaches no connection of that replica, so it must
// not use what it kept: go-redis dialed the new connection itself before
// the cut reached the cache, and that connection, quiet while Redis had
// not yet answered it, told the cache that nothing was unread.
func TestRedisCacheSubscriptionRedial(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "no")
	px := newHoldProxy(t, srv.Addr)
	ctx := context.Background()
	replica := func(addr string) (*Redis, *Manager) {
		r, err := NewRedis(RedisConfig{Addrs: []string{addr}}, make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		_, _, _ = r.load(ctx, "sess:nothing", decodeString) // starts the subscription
		for deadline := time.Now().Add(5 * time.Second); !r.records.live.Load(); {
			if time.Now().After(deadline) {
				t.Fatal("the cache's subscription is not up after 5s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return r, NewManager(r, Config{TTL: time.Hour, IdleTTL: time.Hour})
	}
	_, a := replica(srv.Addr)
	_, b := replica(px.Addr()) // b reaches Redis through the proxy

	s, err := a.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := b.Get(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	px.holdNew()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	if err := admin.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// b dials again, and Redis's answers to it are held.
	select {
	case <-px.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("replica b did not dial its subscription again within 5s")
	}
	if err := a.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	_, err = b.Get(ctx, s.ID)
	px.release()
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("replica b after a logout on a while b's subscription was being dialed again: %v, want ErrNotFound", err)
	}
}
