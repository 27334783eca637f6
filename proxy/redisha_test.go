package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/redistest"
)

// TestReplicasOnRedisCluster: the replica tests, on a three-master Redis
// Cluster reached through one seed address (cluster = true): sessions,
// rotation, revocation by person and the app-token share.
func TestReplicasOnRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	conf := fmt.Sprintf("addrs = [%q]\ncluster = true\ntimeout = \"300ms\"\n", rc.Addrs[0])
	t.Run("sessions and tokens", func(t *testing.T) {
		shareSessionsAndTokens(t, newClusterOn(t, 3, conf+"key_prefix = \"a:\"\n"))
	})
	t.Run("app token once", func(t *testing.T) {
		fetchTheAppTokenOnce(t, newClusterOn(t, 3, fmt.Sprintf("addrs = [%q]\ncluster = true\ntimeout = %q\nkey_prefix = \"b:\"\n", rc.Addrs[0], burstTimeout)))
	})
}

// failoverOutcome is one request of the load during a failover.
type failoverOutcome struct {
	at     time.Time
	status int
	what   string
}

// TestSentinelFailoverUnderLoad: two replicas use Sentinels. Sessions and
// token pairs are made and replicated, then the master is killed (-9)
// while requests with them keep coming. Every answer is 200 or 503 (never
// a login redirect, a 401 or a 500), 503s end soon after a replica is
// promoted, and every login still works afterwards.
//
// Replication is asynchronous: by default what the master took in its last
// moments may be lost, so the test waits for the replica before the kill.
// With wait_replicas = 1 the gateway itself confirms nothing the replica
// lacks, and the test does not wait.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	t.Run("replica synced", func(t *testing.T) { failoverUnderLoad(t, "timeout = \"300ms\"\n", true) })
	// A loaded CI machine may take longer than the 100ms default to
	// replicate.
	t.Run("wait_replicas", func(t *testing.T) {
		failoverUnderLoad(t, "timeout = \"1s\"\nwait_replicas = 1\nwait_timeout = \"500ms\"\n", false)
	})
}

func failoverUnderLoad(t *testing.T, extra string, synced bool) {
	sn := redistest.StartSentinel(t)
	conf := fmt.Sprintf("addrs = [%q, %q, %q]\nmaster_name = %q\n",
		sn.Addrs[0], sn.Addrs[1], sn.Addrs[2], sn.MasterName) + extra
	c := newClusterOn(t, 2, conf)
	// The replica's first sync, before any login: with wait_replicas a
	// login before it is a 503 (WAIT finds no replica yet), which a loaded
	// CI machine showed. Later writes are not waited for here.
	sn.Synced(t)

	// A login is a browser session and a token pair of one person, and the
	// openids the upstream must see for each.
	type login struct{ cookie, bearer, oaOpenID, mpOpenID string }
	var logins []login
	for i := 0; i < 6; i++ {
		user := fmt.Sprint("user", i)
		b := c.gws[0].browser(weChatUA)
		b.login("/", user)
		pair := c.gws[i%2].api().mpLogin(user)
		mp, _ := c.gws[0].sim.User(mpID, user)
		logins = append(logins, login{b.cookie("wxgate_session"), pair["access_token"].(string), c.gws[0].user(user).OpenID, mp.OpenID})
	}
	if synced {
		sn.Synced(t)
	}

	send := func(g *env, l login, bearer bool) failoverOutcome {
		req, _ := http.NewRequest(http.MethodGet, g.url+"/api/x", nil)
		what, openid := "cookie", l.oaOpenID
		if bearer {
			openid = l.mpOpenID
			req.Header.Set("Authorization", "Bearer "+l.bearer)
			what = "bearer"
		} else {
			req.Header.Set("Cookie", "wxgate_session="+l.cookie)
			req.Header.Set("User-Agent", weChatUA)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return failoverOutcome{time.Now(), 0, what + ": " + err.Error()}
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		o := failoverOutcome{time.Now(), resp.StatusCode, what}
		if resp.StatusCode == 200 && !strings.Contains(string(body), openid) {
			o.what += ": 200 without the login's openid: " + string(body)
			o.status = -1
		}
		return o
	}

	ctx, stop := context.WithCancel(context.Background())
	var mu sync.Mutex
	var outcomes []failoverOutcome
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				o := send(c.gws[(w+i)%2], logins[(w+i)%len(logins)], i%2 == 0)
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}(w)
	}
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	sn.Master.Kill()

	// Promotion: a Sentinel names a master other than the dead one.
	var promoted time.Time
	for promoted.IsZero() {
		qctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		addr, err := sn.MasterAddr(qctx)
		cancel()
		switch {
		case err == nil && addr != sn.Master.Addr:
			promoted = time.Now()
		case time.Since(killed) > 15*time.Second:
			stop()
			wg.Wait()
			t.Fatalf("no replica promoted 15s after the kill (last: %s, %v)", addr, err)
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Load goes on long enough after the promotion to see the 503s stop.
	time.Sleep(3 * time.Second)
	stop()
	wg.Wait()

	const settle = 3 * time.Second // promotion to the gateways reconnecting, on a loaded machine
	var ok, unavailable, after int
	var last503 time.Time
	for _, o := range outcomes {
		switch o.status {
		case 200:
			ok++
		case 503:
			unavailable++
			if o.at.Before(killed) {
				t.Errorf("503 before the master was killed")
			}
			if o.at.After(last503) {
				last503 = o.at
			}
			if o.at.After(promoted.Add(settle)) {
				after++
			}
		default:
			t.Errorf("%s request at +%s: status %d, want 200 or 503", o.what, o.at.Sub(killed).Round(time.Millisecond), o.status)
		}
	}
	t.Logf("%d requests: %d ok, %d 503; promoted %s after the kill, last 503 %s after it",
		len(outcomes), ok, unavailable, promoted.Sub(killed).Round(time.Millisecond), last503.Sub(killed).Round(time.Millisecond))
	if after > 0 {
		t.Errorf("%d 503s more than %s after the promotion", after, settle)
	}
	if unavailable == 0 {
		t.Error("no 503 at all: the load did not meet the failover")
	}

	// Every login survived, on both replicas.
	for i, l := range logins {
		for _, g := range c.gws {
			for _, bearer := range []bool{false, true} {
				if o := send(g, l, bearer); o.status != 200 {
					t.Errorf("login %d after the failover: %s %d", i, o.what, o.status)
				}
			}
		}
	}
}
