package session

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
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
	replica := func(addr string) (*Redis, *Manager) { return cacheReplica(t, RedisConfig{Addrs: []string{addr}}) }
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

// TestRedisClusterCacheManualFailover: an operator's CLUSTER FAILOVER
// makes the replica of the channel's master its master, and the old
// master a replica that unsubscribes its shard-channel subscribers
// (sunsubscribe) and keeps their connections (found by attack). A replica
// whose subscription was so ended hears no more news, and must not keep
// using what it keeps: a logout on another replica after the failover is
// in force on it at once.
func TestRedisClusterCacheManualFailover(t *testing.T) {
	c := redistest.StartClusterReplicas(t, 3, 1)
	ctx := context.Background()
	cfg := RedisConfig{Addrs: c.Addrs}
	ra, a := cacheReplica(t, cfg)
	_, b := cacheReplica(t, cfg)
	// w has read no session yet (so it follows no channel), and last
	// asked for the slot map before the failover.
	w := coldReplica(t, cfg)

	// The channel's master and its replica.
	node, err := ra.cluster.MasterForKey(ctx, ra.channel())
	if err != nil {
		t.Fatal(err)
	}
	master := node.Options().Addr
	var standby string
	for _, addr := range c.Addrs {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		info, err := cl.Info(ctx, "replication").Result()
		_ = cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, port, _ := net.SplitHostPort(master); strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port+"\r\n") {
			standby = addr
		}
	}
	if standby == "" {
		t.Fatalf("no replica of %s", master)
	}
	sb := redis.NewClient(&redis.Options{Addr: standby})
	t.Cleanup(func() { _ = sb.Close() })
	deadline, asked := time.Now().Add(20*time.Second), time.Time{}
	for {
		info, err := sb.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "role:master") {
			break
		}
		// A manual failover that did not finish within its 5s is
		// asked for again.
		if time.Since(asked) > 6*time.Second {
			if err := sb.Do(ctx, "cluster", "failover").Err(); err != nil {
				t.Fatal(err)
			}
			asked = time.Now()
			t.Logf("asked %s to take over at %s", standby, asked.Format("15:04:05.000"))
		}
		if time.Now().After(deadline) {
			nodes, _ := sb.ClusterNodes(ctx).Result()
			t.Fatalf("%s is not master 20s after CLUSTER FAILOVER (%v): %s\n%s", standby, err, info, nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}

	for round := range 10 {
		var s *Session
		for deadline := time.Now().Add(10 * time.Second); ; {
			if s, err = a.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("login after the failover: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for range 2 {
			if _, err := b.Get(ctx, s.ID); err != nil {
				t.Fatalf("round %d: Get on replica b: %v", round, err)
			}
		}
		aerr := a.Delete(ctx, s.ID)
		if _, err := b.Get(ctx, s.ID); aerr == nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d after the failover: replica b right after a logout on replica a: %v, want ErrNotFound (or the logout to fail)", round, err)
		}
	}

	// A logout on w, whose slot map still names the old master, of a
	// session stored on a master the failover left alone (so that nothing
	// corrects w's map on the way): either w says it failed, or b sees it.
	wm := NewManager(w, Config{TTL: time.Hour, IdleTTL: time.Hour})
	for round := range 20 {
		var s *Session
		for {
			if s, err = a.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil); err != nil {
				t.Fatal(err)
			}
			n, err := ra.cluster.MasterForKey(ctx, ra.prefix+sessionPrefix+s.Key)
			if err != nil {
				t.Fatal(err)
			}
			if n.Options().Addr != standby {
				break
			}
		}
		for range 2 {
			if _, err := b.Get(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
		}
		werr := wm.Delete(ctx, s.ID)
		if _, err := b.Get(ctx, s.ID); werr == nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: replica b right after a logout on a replica whose slot map predates the failover: %v, want ErrNotFound (or the logout to fail)", round, err)
		}
	}
}

// TestRedisClusterCacheSlotMoved: the channel's slot moves to another
// master (a resharding). The old master answers MOVED to a publish, and
// unsubscribes its shard-channel subscribers (found by attack). A logout
// is then either in force on every replica at once, or answered as
// failed; before, MOVED was taken for a Redis that refuses the channel,
// and the logout succeeded while the other replicas heard nothing.
func TestRedisClusterCacheSlotMoved(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	ctx := context.Background()
	cfg := RedisConfig{Addrs: c.Addrs}
	ra, a := cacheReplica(t, cfg)
	rb, b := cacheReplica(t, cfg)
	// w has read no session yet (so it follows no channel), and last
	// asked for the slot map before the move.
	w := coldReplica(t, cfg)
	wm := NewManager(w, Config{TTL: time.Hour, IdleTTL: time.Hour})

	node, err := ra.cluster.MasterForKey(ctx, ra.channel())
	if err != nil {
		t.Fatal(err)
	}
	from := node.Options().Addr
	var to string
	for _, addr := range c.Addrs {
		if addr != from {
			to = addr
			break
		}
	}
	target := redis.NewClient(&redis.Options{Addr: to})
	t.Cleanup(func() { _ = target.Close() })
	id, err := target.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	slot, err := target.ClusterKeySlot(ctx, ra.channel()).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The slot holds no key: it moves by decree, target first.
	for _, addr := range append([]string{to}, c.Addrs...) {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		err := cl.Do(ctx, "cluster", "setslot", slot, "node", id).Err()
		_ = cl.Close()
		if err != nil {
			t.Fatalf("CLUSTER SETSLOT at %s: %v", addr, err)
		}
	}

	succeeded := 0
	for round := range 20 {
		// Logouts on w first, then on a.
		logout := wm.Delete
		if round >= 10 {
			logout = a.Delete
		}
		waitLive(t, rb)
		// A login may fail once on a replica whose slot map is stale:
		// its news would reach no one.
		var s *Session
		for deadline := time.Now().Add(5 * time.Second); ; {
			if s, err = a.Create(ctx, Identity{OpenID: "o1", Scope: "snsapi_base"}, nil); err == nil {
				break
			}
			if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("round %d: login: %v", round, err)
			}
		}
		for range 2 {
			if _, err := b.Get(ctx, s.ID); err != nil {
				t.Fatalf("round %d: Get on replica b: %v", round, err)
			}
		}
		aerr := logout(ctx, s.ID)
		if _, err := b.Get(ctx, s.ID); aerr == nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d after the slot moved: replica b right after a logout on another: %v, want ErrNotFound (or the logout to fail)", round, err)
		}
		if aerr == nil {
			succeeded++
		}
	}
	if succeeded < 10 {
		t.Errorf("%d of 20 logouts after the slot moved succeeded, want most", succeeded)
	}
}

// TestRedisCloseIsPrompt: Close ends the cache's subscription at once
// rather than when its read next times out (a second of a gateway's
// shutdown; found by attack), and leaves no goroutine of it behind.
func TestRedisCloseIsPrompt(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "no")
	r, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	waitLive(t, r)
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > watchPing/2 {
		t.Errorf("Close took %s, want well under the subscription's %s read timeout", d, watchPing)
	}
	select {
	case <-r.records.done:
	default:
		t.Error("the subscription still runs after Close")
	}
}

// coldReplica is a Redis store on cfg that has written once (so a Cluster
// client has its slot map) and read no session (so it follows no channel).
func coldReplica(t testing.TB, cfg RedisConfig) *Redis {
	t.Helper()
	w, err := NewRedis(cfg, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	if err := w.Set(context.Background(), "warm", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	return w
}
