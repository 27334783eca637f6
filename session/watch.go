package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis store's side of the cache (cache.go): writes of sessions and
// token families are published on a channel, and every replica follows it
// on a connection of its own (watchConn), which shows when news is
// waiting unread.

// channel is where writes of cacheable keys are announced.
func (r *Redis) channel() string { return r.prefix + "changed" }

// publish implements notifier. After the message, a PING: Redis sends a
// published message to the subscribers in the same turn of its event loop
// as the publisher's answer, but may send the answer first; a command read
// after that answer is handled in a later turn, so once the PING's answer
// is here, the message is in every subscriber's socket (where watchConn
// sees it), and the write's caller may answer its client. In a Cluster the
// channel is a shard channel (Redis 7), published and followed on the
// master of its slot, so that the same holds; a plain PUBLISH there
// reaches the other nodes later, over the cluster bus. There the PING is
// a read of a key in the channel's slot, which also proves that the node
// is still that slot's master: after a failover the node go-redis still
// takes for it may be a replica, which takes the message (Redis 7.0) and
// passes it on later, over the cluster bus.
func (r *Redis) publish(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var node *redis.Client
	var err error
	if r.cluster != nil {
		if node, err = r.cluster.MasterForKey(ctx, r.channel()); err == nil {
			err = node.SPublish(ctx, r.channel(), key).Err()
		}
	} else {
		err = r.c.Publish(ctx, r.channel(), key).Err()
	}
	var refused redis.Error
	if errors.As(err, &refused) && !transient(err) {
		// Redis refused the command itself: a user without the channel
		// (NOPERM), or a Cluster before Redis 7 (no shard channels). No
		// replica (they share the user and the server) can subscribe
		// either, so none keeps anything to drop.
		r.noChannel.Do(func() {
			logWatch(ctx, "Redis refuses the channel "+r.channel()+"; sessions are read from Redis on every request", err)
		})
		return nil
	}
	if err != nil {
		return r.wrap("publish", err)
	}
	if node == nil {
		return r.wrap("publish", r.c.Ping(ctx).Err())
	}
	return r.wrap("publish", r.holdsChannel(ctx, node))
}

// transient reports whether an error answer from Redis is about the moment
// (a failover, a slot moving, a restart) rather than the command: the
// write is then not known to the other replicas, and fails.
func transient(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsTryAgainError(err) || redis.IsClusterDownError(err) ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err)
}

// holdsChannel reports (nil) whether node is the master of the channel's
// slot, asking it of a key in that slot, the channel's own name: a master
// without the slot and a replica (to a client that did not send READONLY)
// answer MOVED. It asks what any user of the key prefix may, where ROLE
// needs @admin.
func (r *Redis) holdsChannel(ctx context.Context, node *redis.Client) error {
	return node.Exists(ctx, r.channel()).Err()
}

// unread implements notifier.
func (r *Redis) unread() bool {
	w := r.watched.Load()
	return w == nil || w.unread()
}

// watchPing is how often a quiet subscription is checked: a connection
// that answers no PING within two of these is given up and dialed again,
// the cache unused meanwhile.
const watchPing = time.Second

// watch implements notifier with a subscription, dialed again whenever it
// fails.
func (r *Redis) watch(ctx context.Context, changed func(key string), live func(bool)) {
	seed := 0
	pause := watchRetry
	for ctx.Err() == nil {
		wasUp := false
		err := r.subscribe(ctx, seed, changed, func(up bool) {
			wasUp = wasUp || up
			live(up)
		})
		live(false)
		if ctx.Err() != nil {
			return
		}
		if r.cluster != nil {
			// The slot map may be what sent it to the wrong node.
			r.cluster.ReloadState(ctx)
		}
		// One line per outage, not one per attempt.
		if wasUp || seed == 0 {
			logWatch(ctx, "the session cache's subscription to Redis failed; sessions are read from Redis until it is back", err)
		}
		if wasUp {
			pause = watchRetry
		}
		seed++
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, watchRetryMax)
	}
}

// The pause before dialing the subscription again doubles from watchRetry
// to watchRetryMax while it keeps failing.
const (
	watchRetry    = 100 * time.Millisecond
	watchRetryMax = 10 * time.Second
)

// subscribe follows one subscription until it fails or ctx ends. seed
// counts the attempts, so that the Sentinels are asked in turn.
func (r *Redis) subscribe(ctx context.Context, seed int, changed func(key string), live func(bool)) error {
	addr, node, err := r.watchAddr(ctx, seed)
	if err != nil {
		return err
	}
	// A client of its own with one connection, dialed through watchConn,
	// and only once: go-redis dials a failed subscription again itself,
	// before the failure reaches this loop, and the new connection, quiet
	// until Redis answers it, would tell the cache that nothing is unread
	// while news published since the failure is lost and what the cache
	// keeps is still in use (TestRedisCacheSubscriptionRedial). This loop
	// dials again, after the cache has been emptied.
	var dialed atomic.Bool
	c := redis.NewClient(&redis.Options{
		Addr: addr, Username: r.cfg.Username, Password: r.password,
		DialTimeout: r.timeout, ReadTimeout: r.timeout, WriteTimeout: r.timeout,
		PoolSize: 1, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dialed.Swap(true) {
				return nil, errRedial
			}
			return r.dialWatch(ctx, network, addr)
		},
	})
	defer c.Close()
	var ps *redis.PubSub
	if r.cluster != nil {
		ps = c.SSubscribe(ctx, r.channel())
	} else {
		ps = c.Subscribe(ctx, r.channel())
	}
	defer ps.Close()
	// The read below waits up to watchPing whatever ctx says: closing the
	// subscription ends it at once when ctx ends (Close).
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	unanswered := 0 // pings sent since the last message
	for {
		msg, err := ps.ReceiveTimeout(ctx, watchPing)
		if err != nil {
			var timeout interface{ Timeout() bool }
			if ctx.Err() != nil || !errors.As(err, &timeout) || !timeout.Timeout() {
				return err
			}
			if unanswered++; unanswered > 1 {
				return fmt.Errorf("no answer to PING within %s", 2*watchPing)
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			continue
		}
		unanswered = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				// Redis ended it: a Cluster node that lost the channel's
				// slot (a failover, a resharding) unsubscribes its
				// shard-channel subscribers and keeps their connections,
				// which hear nothing more.
				return fmt.Errorf("redis ended the subscription (%s)", m.Kind)
			}
			if node != nil {
				// Subscribed on a node that is master now: it tells of
				// any loss of the slot from now on, as above. A replica
				// (a stale slot map) would take the subscription and
				// pass on the news after the publisher's barrier.
				if err := r.holdsChannel(ctx, node); err != nil {
					return fmt.Errorf("subscribed at %s: %w", addr, err)
				}
			}
			live(true)
		case *redis.Message:
			changed(m.Payload)
		}
	}
}

// errRedial refuses go-redis's own redial of a subscription (subscribe).
var errRedial = errors.New("session: the subscription is dialed again by its loop")

// watchAddr is the server the subscription dials: the standalone server;
// in a Cluster, the master of the channel's slot (and go-redis's client of
// it); a Sentinel setup's master, as the Sentinels (in turn) name it.
func (r *Redis) watchAddr(ctx context.Context, seed int) (string, *redis.Client, error) {
	addrs := r.cfg.Addrs
	switch {
	case r.cluster != nil:
		node, err := r.cluster.MasterForKey(ctx, r.channel())
		if err != nil {
			return "", nil, fmt.Errorf("finding the master of the channel's slot: %w", err)
		}
		return node.Options().Addr, node, nil
	case r.cfg.MasterName == "":
		return addrs[0], nil, nil
	}
	var errs []error
	for i := range addrs {
		s := redis.NewSentinelClient(&redis.Options{
			Addr: addrs[(seed+i)%len(addrs)], Password: r.sentPwd,
			DialTimeout: r.timeout, ReadTimeout: r.timeout, WriteTimeout: r.timeout,
			TLSConfig: r.tlsConfig(), MaxRetries: -1,
		})
		hp, err := s.GetMasterAddrByName(ctx, r.cfg.MasterName).Result()
		_ = s.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil, nil
		}
		errs = append(errs, err)
	}
	return "", nil, fmt.Errorf("no Sentinel named master %q: %w", r.cfg.MasterName, errors.Join(errs...))
}

// dialWatch dials the subscription's connection, TLS on top of the
// watchConn, so that it sees the socket itself.
func (r *Redis) dialWatch(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: r.timeout, KeepAlive: 5 * time.Minute}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w := newWatchConn(c)
	var conn net.Conn = w
	if cfg := r.tlsConfig(); cfg != nil {
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(w, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		conn = tc
	}
	r.watched.Store(w)
	return conn, nil
}

// tlsConfig is a fresh TLS configuration, nil without tls.
func (r *Redis) tlsConfig() *tls.Config {
	if !r.cfg.TLS {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.cfg.TLSServerName}
}

// watchLog receives the subscription's failures: LogRedisTo's logger, or
// slog.Default.
var watchLog atomic.Pointer[slog.Logger]

func logWatch(ctx context.Context, msg string, err error) {
	l := watchLog.Load()
	if l == nil {
		l = slog.Default()
	}
	l.WarnContext(ctx, msg, "error", err)
}
