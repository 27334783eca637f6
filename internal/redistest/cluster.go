package redistest

import (
	"context"
	"os/exec"
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
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	need(t, "redis-server", "redis-cli")
	c := &Cluster{}
	for i := 0; i < n; i++ {
		s := start(t, freePort(t, true), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--appendonly", "no")
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		waitFor(t, ctx, addr, "", "cluster_state:ok", func(cl *redis.Client) (string, error) {
			return cl.ClusterInfo(ctx).Result()
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
