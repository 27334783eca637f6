package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a monitored master with one replica and three Sentinels
// (quorum 2) that fail over 500ms after the master stops answering.
type Sentinel struct {
	MasterName string
	// Password is the master's and the replica's requirepass, and
	// SentinelPassword the Sentinels'; "" for none.
	Password, SentinelPassword string
	// Addrs are the Sentinels' addresses.
	Addrs     []string
	Master    *Server
	Replica   *Server
	Sentinels []*Server
}

// StartSentinel starts the master (append-only file, synced always), its
// replica and three Sentinels (`redis-server sentinel.conf --sentinel`: no
// redis-sentinel package needed), all on loopback, and waits until every
// Sentinel knows the replica and the other two. Everything stops at
// cleanup.
func StartSentinel(t testing.TB) *Sentinel { return StartSentinelAuth(t, "", "") }

// StartSentinelAuth is StartSentinel with passwords: password for the
// master and the replica (either may be promoted), sentinelPassword for
// the Sentinels.
func StartSentinelAuth(t testing.TB, password, sentinelPassword string) *Sentinel {
	t.Helper()
	need(t, "redis-server")
	s := &Sentinel{MasterName: "wxgate", Password: password, SentinelPassword: sentinelPassword}
	var auth []string
	if password != "" {
		auth = []string{"--requirepass", password, "--masterauth", password}
	}
	// No wait for more replicas before a full sync (5s by default).
	s.Master = start(t, freePort(t, false), append(auth, "--repl-diskless-sync-delay", "0")...)
	_, mport, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = start(t, freePort(t, false), append(auth, "--replicaof", "127.0.0.1", mport)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(t, ctx, s.Replica.Addr, password, "master_link_status:up", func(cl *redis.Client) (string, error) {
		return cl.Info(ctx, "replication").Result()
	})

	// Each Sentinel is told its own ID, the replica and the other
	// Sentinels, so none waits for discovery (INFO every 10s, hellos every
	// 2s).
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = randomID(t)
		s.Addrs = append(s.Addrs, freePort(t, false))
	}
	_, rport, _ := net.SplitHostPort(s.Replica.Addr)
	for i := range ids {
		var conf strings.Builder
		fmt.Fprintf(&conf, "sentinel myid %s\n", ids[i])
		fmt.Fprintf(&conf, "sentinel monitor %s 127.0.0.1 %s 2\n", s.MasterName, mport)
		if password != "" {
			fmt.Fprintf(&conf, "sentinel auth-pass %s %s\n", s.MasterName, password)
		}
		if sentinelPassword != "" {
			// Its own, and what it presents to the other Sentinels.
			fmt.Fprintf(&conf, "requirepass %s\nsentinel sentinel-pass %s\n", sentinelPassword, sentinelPassword)
		}
		fmt.Fprintf(&conf, "sentinel down-after-milliseconds %s 500\n", s.MasterName)
		fmt.Fprintf(&conf, "sentinel failover-timeout %s 2000\n", s.MasterName)
		fmt.Fprintf(&conf, "sentinel parallel-syncs %s 1\n", s.MasterName)
		fmt.Fprintf(&conf, "sentinel known-replica %s 127.0.0.1 %s\n", s.MasterName, rport)
		for j := range ids {
			if j != i {
				_, port, _ := net.SplitHostPort(s.Addrs[j])
				fmt.Fprintf(&conf, "sentinel known-sentinel %s 127.0.0.1 %s %s\n", s.MasterName, port, ids[j])
			}
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		sn := &Server{Addr: s.Addrs[i], t: t, dir: dir, conf: path, ready: "+monitor master"}
		sn.Restart()
		t.Cleanup(sn.Stop)
		s.Sentinels = append(s.Sentinels, sn)
	}
	want := fmt.Sprintf("name=%s,status=ok,address=%s,slaves=1,sentinels=3", s.MasterName, s.Master.Addr)
	for _, addr := range s.Addrs {
		waitFor(t, ctx, addr, sentinelPassword, want, func(cl *redis.Client) (string, error) {
			return cl.Info(ctx, "sentinel").Result()
		})
	}
	return s
}

// Synced waits until the replica has every write the master took so far:
// a write, then WAIT on the same connection.
func (s *Sentinel) Synced(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := redis.NewClient(&redis.Options{Addr: s.Master.Addr, Password: s.Password})
	defer cl.Close()
	var n int64
	cmds, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "redistest:synced", "1", time.Minute)
		p.Do(ctx, "wait", 1, 2000)
		return nil
	})
	if err == nil {
		n, err = cmds[1].(*redis.Cmd).Int64()
	}
	if err != nil || n != 1 {
		t.Fatalf("replica in sync: WAIT = %d, %v", n, err)
	}
}

// MasterAddr asks the first answering Sentinel for the master's address.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: s.SentinelPassword, MaxRetries: -1})
		hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		sc.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no Sentinel named the master: %w", last)
}

func randomID(t testing.TB) string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
