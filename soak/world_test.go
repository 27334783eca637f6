package soak

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/syncbuf"

	"github.com/wxgate/wxgate/internal/redistest"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// The apps the replicas and the simulator share.
const (
	oaID, oaSecret   = "wxsoak00000000oa1", "soak-oa-secret-0123456789"
	appID, appSecret = "wxsoak0000000app1", "soak-app-secret-0123456789"
)

// world is everything a soak run starts.
type world struct {
	t        *testing.T
	dir, bin string
	sim      *wechatsim.Server
	simURL   string
	redis    *redistest.Server
	up       *upstream
	lb       *balancer
	replicas []*replica
	env      []string
	cfg      string
	// began is when the fault schedule started; retired holds the last
	// metrics of replica processes that have exited.
	began   time.Time
	retired []string
}

func newWorld(t *testing.T, lifetimes wechatsim.Lifetimes) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	w.redis = redistest.Start(t)
	w.bin = filepath.Join(w.dir, "wxgate")
	if out, err := exec.Command("go", "build", "-o", w.bin, "../cmd/wxgate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	key := filepath.Join(w.dir, "signing-key.pem")
	if out, err := exec.Command(w.bin, "keygen", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("wxgate keygen: %v\n%s", err, out)
	}
	w.up = startUpstream(t)
	w.lb = startBalancer(t)

	w.sim = wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "soak", Domain: "127.0.0.1"},
		wechatsim.App{AppID: appID, Secret: appSecret, Type: wechatsim.MobileApp, OpenPlatformID: "soak"},
	)
	w.sim.SetLifetimes(lifetimes)
	simSrv := httptest.NewServer(w.sim)
	t.Cleanup(simSrv.Close)
	w.simURL = simSrv.URL

	sessionKey := make([]byte, 32)
	_, _ = rand.Read(sessionKey)
	w.cfg = filepath.Join(w.dir, "gateway.toml")
	if err := os.WriteFile(w.cfg, []byte(fmt.Sprintf(configTemplate,
		w.lb.url(), w.redis.Addr, key, w.simURL, w.simURL, oaID, appID, w.up.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	w.env = append(os.Environ(),
		"SOAK_SESSION_KEY="+base64.StdEncoding.EncodeToString(sessionKey),
		"SOAK_OA_SECRET="+oaSecret,
		"SOAK_APP_SECRET="+appSecret,
		"WXGATE_ADMIN_TOKEN=soak-admin-token-0123456789",
	)
	for i := range 2 {
		r := &replica{w: w, name: "gw" + strconv.Itoa(i+1)}
		r.start()
		w.replicas = append(w.replicas, r)
		w.lb.add(r)
	}
	t.Cleanup(func() {
		for _, r := range w.replicas {
			r.kill()
		}
	})
	return w
}

// configTemplate is the replicas' gateway.toml: short WeChat lifetimes
// make refreshes happen within the run, and the sweeper refreshes idle
// sessions ahead of requests.
const configTemplate = `
[server]
public_url = %q
log_level = "warn"
admin_token_env = "WXGATE_ADMIN_TOKEN"
shutdown_delay = "1s"
shutdown_timeout = "10s"

[session]
store = "redis"
encryption_key_env = "SOAK_SESSION_KEY"
refresh_margin = "8s"
refresh_ahead = "2s"

[session.redis]
addrs = [%q]
timeout = "1s"

[tokens]
signing_key_file = %q
access_ttl = "1m"

[wechat]
api_base = %q
open_base = %q
timeout = "1s"
retries = 2

[wechat.official_account]
appid = %q
secret_env = "SOAK_OA_SECRET"

[wechat.app]
appid = %q
secret_env = "SOAK_APP_SECRET"

[policy]
default = "login"
upstream = "app"

[[upstream]]
name = "app"
url = "http://%s"
timeout = "2s"

[[route]]
name = "api"
path = "/api/**"
api = true
`

// replica is one `wxgate serve` process.
type replica struct {
	w    *world
	name string
	// mu guards pub and admin: a restart moves them while the balancer and
	// the app-token poller read them.
	mu          sync.Mutex
	pub, admin  string
	cmd         *exec.Cmd
	out         *syncbuf.Buffer
	done        chan struct{}
	exitErr     error
	lastMetrics atomic.Pointer[string] // the last scrape, kept across a restart
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs the replica and waits until it is ready.
func (r *replica) start() {
	t := r.w.t
	t.Helper()
	pub, admin := freePort(t), freePort(t)
	r.mu.Lock()
	r.pub, r.admin = pub, admin
	r.mu.Unlock()
	r.out = &syncbuf.Buffer{}
	r.cmd = exec.Command(r.w.bin, "serve", "--config", r.w.cfg)
	r.cmd.Dir = r.w.dir
	r.cmd.Env = append(r.w.env, "WXGATE_SERVER_LISTEN="+pub, "WXGATE_SERVER_ADMIN_LISTEN="+admin)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { r.exitErr = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for !r.ready() {
		select {
		case <-r.done:
			t.Fatalf("%s exited at start: %v\n%s", r.name, r.exitErr, r.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 20s\n%s", r.name, r.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var probe = &http.Client{Timeout: 2 * time.Second}

// addrs returns the public and admin addresses of the running process.
func (r *replica) addrs() (pub, admin string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pub, r.admin
}

func (r *replica) ready() bool {
	_, admin := r.addrs()
	resp, err := probe.Get("http://" + admin + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// metrics scrapes the replica and keeps the scrape.
func (r *replica) metrics() string {
	_, admin := r.addrs()
	resp, err := probe.Get("http://" + admin + "/metrics")
	if err != nil {
		if p := r.lastMetrics.Load(); p != nil {
			return *p
		}
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	r.lastMetrics.Store(&s)
	return s
}

// terminate sends SIGTERM and waits for the exit.
func (r *replica) terminate(timeout time.Duration) error {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return r.exitErr
	case <-time.After(timeout):
		r.kill()
		return fmt.Errorf("%s still running %s after SIGTERM", r.name, timeout)
	}
}

func (r *replica) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// metricSum adds every sample of name whose labels contain all of want
// ("key=\"value\"" strings).
func metricSum(scrape, name string, want ...string) float64 {
	sum := 0.0
	for _, l := range strings.Split(scrape, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
			sum += f
		}
	}
	return sum
}

// balancer is a TCP load balancer with readiness checks, what a
// Kubernetes Service or a cloud load balancer is: it sends each new
// connection to a replica whose /readyz answered 200 at its last check
// (every 100 ms), round robin.
type balancer struct {
	ln   net.Listener
	mu   sync.Mutex
	all  []*replica
	up   map[*replica]bool
	next int
	stop chan struct{}
}

func startBalancer(t *testing.T) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, up: map[*replica]bool{}, stop: make(chan struct{})}
	go b.accept()
	go b.check()
	t.Cleanup(func() { close(b.stop); ln.Close() })
	return b
}

func (b *balancer) url() string { return "http://" + b.ln.Addr().String() }

func (b *balancer) add(r *replica) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all = append(b.all, r)
	b.up[r] = true
}

func (b *balancer) check() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		all := append([]*replica(nil), b.all...)
		b.mu.Unlock()
		for _, r := range all {
			ok := r.ready()
			b.mu.Lock()
			b.up[r] = ok
			b.mu.Unlock()
		}
	}
}

func (b *balancer) pick() *replica {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.all {
		r := b.all[b.next%len(b.all)]
		b.next++
		if b.up[r] {
			return r
		}
	}
	return nil
}

func (b *balancer) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.relay(c)
	}
}

func (b *balancer) relay(c net.Conn) {
	defer c.Close()
	r := b.pick()
	if r == nil {
		return
	}
	pub, _ := r.addrs()
	u, err := net.DialTimeout("tcp", pub, 2*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); closeWrite(u); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// simCode asks the simulator for a login code, as wx.login or SendAuth
// would give an app.
func (w *world) simCode(ctx context.Context, appid, user string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.simURL+"/_sim/code",
		strings.NewReader(fmt.Sprintf(`{"appid":%q,"user":%q}`, appid, user)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ Code string }
	if err := jsonDecode(resp.Body, &out); err != nil || out.Code == "" {
		return "", fmt.Errorf("/_sim/code: %v", err)
	}
	return out.Code, nil
}
