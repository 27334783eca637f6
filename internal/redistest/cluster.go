package redistest

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a running Redis Cluster of masters without replicas.
type Cluster struct {
	// Addrs are the nodes' addresses, each a seed for a Cluster client.
	Addrs []string
	Nodes []*Server
}

// StartCluster starts n (at least 3) Cluster nodes without persistence,
// joins them with `redis-cli --cluster create`, and waits until every node
// reports cluster_state:ok. The nodes stop at cleanup.
func StartCluster(t testing.TB, n int) *Cluster { return StartClusterReplicas(t, n, 0) }

// StartClusterReplicas is StartCluster with replicas replicas per master
// (nodes: masters*(1+replicas)); a master's replica takes over its slots
// about 2s (cluster-node-timeout) after it stops answering.
func StartClusterReplicas(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	need(t, "redis-server", "redis-cli")
	c := &Cluster{}
	for i := 0; i < masters*(1+replicas); i++ {
		s := start(t, freePort(t, true), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--appendonly", "no",
			// A replica that never synced may not take over: no 5s wait
			// before the first sync.
			"--repl-diskless-sync-delay", "0")
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		waitFor(t, ctx, addr, "", "cluster_state:ok", func(cl *redis.Client) (string, error) {
			return cl.ClusterInfo(ctx).Result()
		})
		// A replica is ready once it has its master's data.
		waitFor(t, ctx, addr, "", "ready", func(cl *redis.Client) (string, error) {
			info, err := cl.Info(ctx, "replication").Result()
			if strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up") {
				return "ready", err
			}
			return info, err
		})
	}
	return c
}

// waitFor polls the server at addr (with password, if any) with query
// until its answer contains want, failing the test when ctx ends first.
func waitFor(t testing.TB, ctx context.Context, addr, password, want string, query func(*redis.Client) (string, error)) {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1})
	defer cl.Close()
	var last string
	for {
		got, err := query(cl)
		if err == nil && strings.Contains(got, want) {
			return
		}
		last = got
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no %q in time; last answer: %.300s", addr, want, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Masters are the nodes that are masters now.
func (c *Cluster) Masters(t testing.TB) []*Server {
	t.Helper()
	var out []*Server
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: n.Addr})
		info, err := cl.Info(context.Background(), "replication").Result()
		cl.Close()
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if strings.Contains(info, "role:master") {
			out = append(out, n)
		}
	}
	return out
}

// Synced waits until master's replicas have every write it took so far.
func Synced(t testing.TB, master *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitFor(t, ctx, master.Addr, "", "synced", func(cl *redis.Client) (string, error) {
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return "", err
		}
		var offset, acked string
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
				offset = v
			}
			if v, ok := strings.CutPrefix(line, "slave0:"); ok {
				for _, kv := range strings.Split(v, ",") {
					if o, ok := strings.CutPrefix(kv, "offset="); ok {
						acked = o
					}
				}
			}
		}
		if offset != "" && offset == acked {
			return "synced", nil
		}
		return info, nil
	})
}
