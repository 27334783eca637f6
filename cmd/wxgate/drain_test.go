package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The drain (issue 9, finding 5), tested on the built binary the way a
// load balancer and an operator meet it.

// holdUpstream answers /hold only when release is closed (or the test
// ends), telling arrived when such a request comes; anything else it
// answers at once with "fast".
type holdUpstream struct {
	*httptest.Server
	arrived chan struct{}
	release chan struct{}
}

func newHoldUpstream(t *testing.T) *holdUpstream {
	t.Helper()
	u := &holdUpstream{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	stop := make(chan struct{})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hold" {
			_, _ = io.WriteString(w, "fast")
			return
		}
		u.arrived <- struct{}{}
		w.Header().Set("Content-Length", "4")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
			_, _ = io.WriteString(w, "done")
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop); u.Close() })
	return u
}

// waitArrived waits until a /hold request has reached the upstream.
func (u *holdUpstream) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-u.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request never reached the upstream")
	}
}

// drainGateway is `wxgate serve` in front of up with the given [server]
// shutdown_delay and shutdown_timeout, every path public.
type drainGateway struct {
	*proc
	public, admin string
	dir           string
}

func startDrainGateway(t *testing.T, up string, delay, timeout string) *drainGateway {
	t.Helper()
	bin := buildWxgate(t)
	dir := t.TempDir()
	port, aport := freePort(t), freePort(t)
	g := &drainGateway{public: "http://127.0.0.1:" + port, admin: "http://127.0.0.1:" + aport, dir: dir}
	conf := fmt.Sprintf(`[server]
listen = "127.0.0.1:%s"
admin_listen = "127.0.0.1:%s"
public_url = "%s"
shutdown_delay = %q
shutdown_timeout = %q
[session]
snapshot_file = "sessions.snapshot"
[tokens]
signing_key_file = "signing-key.pem"
[wechat]
api_base = "http://127.0.0.1:1"
open_base = "http://127.0.0.1:1"
[wechat.official_account]
appid = "wx00000000000000a1"
secret_env = "WXGATE_TEST_DRAIN_SECRET"
[[upstream]]
name = "app"
url = %q
[[route]]
name = "open"
path = "/**"
action = "public"
`, port, aport, g.public, delay, timeout, up)
	path := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	g.proc = newProc(t, bin, dir, append(os.Environ(), "WXGATE_TEST_DRAIN_SECRET=drain-test-secret"), "serve", "--config", path)
	g.run(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if status, _ := get(g.public + "/fast"); status == http.StatusOK {
			return g
		}
		select {
		case <-g.done:
			t.Fatalf("wxgate serve exited: %v\n%s", g.err, g.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("wxgate serve not answering within 30s\n%s", g.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get sends one request on a new connection and returns the status and
// body, or 0 and the error.
func get(u string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// holdRequest sends GET /hold and reports its outcome on the channel.
func holdRequest(public string) <-chan string {
	out := make(chan string, 1)
	go func() {
		status, body := get(public + "/hold")
		out <- fmt.Sprintf("%d %s", status, body)
	}()
	return out
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// exitWithin waits for the process to exit within d and returns how long
// it took.
func (p *proc) exitWithin(t *testing.T, since time.Time, d time.Duration) time.Duration {
	t.Helper()
	select {
	case <-p.done:
		return time.Since(since)
	case <-time.After(time.Until(since.Add(d))):
		t.Fatalf("no exit within %s of the signal\n%s", d, p.stderr)
	}
	return 0
}

// pollUntil calls cond every 10ms until it is true or d has passed.
func pollUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestServeDrainWindow: after SIGTERM the gateway is not ready but still
// serves, new connections and keep-alive ones, for shutdown_delay; then
// its port refuses, the request in flight finishes and it exits 0 with
// its snapshot written.
func TestServeDrainWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const delay = 2 * time.Second
	up := newHoldUpstream(t)
	g := startDrainGateway(t, up.URL, delay.String(), "10s")
	held := holdRequest(g.public)
	up.waitArrived(t)
	ka, err := net.Dial("tcp", strings.TrimPrefix(g.public, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	kr := bufio.NewReader(ka)
	if resp := rawGet(t, ka, kr); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("keep-alive request before SIGTERM: %d, close %v", resp.StatusCode, resp.Close)
	}

	// A pre-connection that never sends a byte must not hold the exit.
	pre, err := net.Dial("tcp", strings.TrimPrefix(g.public, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()

	sent := time.Now()
	g.signal(t, syscall.SIGTERM)
	if !pollUntil(delay/2, func() bool { s, _ := get(g.admin + "/readyz"); return s == http.StatusServiceUnavailable }) {
		s, body := get(g.admin + "/readyz")
		t.Fatalf("/readyz after SIGTERM: %d %s, want 503 while still serving\n%s", s, body, g.stderr)
	}
	if status, body := get(g.public + "/fast"); status != http.StatusOK || body != "fast" {
		t.Errorf("a new connection during shutdown_delay: %d %q, want 200 \"fast\" (proxied)", status, body)
	}
	if resp := rawGet(t, ka, kr); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("a keep-alive request during shutdown_delay: %d, Connection: close %v; want 200 closing the connection", resp.StatusCode, resp.Close)
	}
	if d := time.Since(sent); d >= delay {
		t.Fatalf("the checks above took %s, longer than shutdown_delay %s: the machine is too slow for this test", d, delay)
	}

	refused := pollUntil(delay+5*time.Second, func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(g.public, "http://"))
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if d := time.Since(sent); !refused || d < delay {
		t.Fatalf("the port refused %v after %s; want it refused once shutdown_delay %s has passed", refused, d, delay)
	}
	select {
	case <-g.done:
		t.Fatalf("exited with a request in flight: %v\n%s", g.err, g.stderr)
	default:
	}
	close(up.release)
	if got := <-held; got != "200 done" {
		t.Errorf("the request in flight at SIGTERM got %q, want \"200 done\"", got)
	}
	if took := g.exitWithin(t, time.Now(), 5*time.Second); took > 1500*time.Millisecond {
		t.Errorf("exited %s after the last request ended, with an unused connection open; want at once", took)
	}
	if g.err != nil {
		t.Errorf("exit: %v, want 0\n%s", g.err, g.stderr)
	}
	if strings.Contains(g.stderr.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged during a clean drain:\n%s", g.stderr)
	}
	if !exists(t, g.dir, "sessions.snapshot") {
		t.Errorf("no snapshot written\n%s", g.stderr)
	}
}

// TestServeSecondSignalAndTimeout: a second SIGTERM skips the rest of a
// long shutdown_delay; a request still running at shutdown_timeout is cut,
// counted in a warning, and the exit is 0 with the snapshot written.
func TestServeSecondSignalAndTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	up := newHoldUpstream(t)
	g := startDrainGateway(t, up.URL, "1m", "1s")
	held := holdRequest(g.public)
	up.waitArrived(t)
	g.signal(t, syscall.SIGTERM)
	if !pollUntil(5*time.Second, func() bool { s, _ := get(g.admin + "/readyz"); return s == http.StatusServiceUnavailable }) {
		s, body := get(g.admin + "/readyz")
		t.Fatalf("/readyz after SIGTERM: %d %s, want 503 while still serving\n%s", s, body, g.stderr)
	}
	second := time.Now()
	g.signal(t, syscall.SIGTERM)
	took := g.exitWithin(t, second, 4*time.Second)
	if took < time.Second {
		t.Errorf("exited %s after the second signal with a request in flight; want it waited for shutdown_timeout (1s)", took)
	}
	if g.err != nil {
		t.Errorf("exit: %v, want 0 (the cut is counted in a warning)\n%s", g.err, g.stderr)
	}
	if got := <-held; strings.HasPrefix(got, "200 done") {
		t.Errorf("the held request completed (%q); want it cut", got)
	}
	log := g.stderr.String()
	if !strings.Contains(log, `"level":"WARN","msg":"the shutdown's time ran out: cut the requests still in flight","requests":1`) {
		t.Errorf("no warning counting 1 cut request:\n%s", log)
	}
	if strings.Contains(log, `"level":"ERROR"`) {
		t.Errorf("errors logged:\n%s", log)
	}
	if !exists(t, g.dir, "sessions.snapshot") {
		t.Errorf("no snapshot written\n%s", log)
	}
}

// rawGet sends GET /fast on c and reads the response from r.
func rawGet(t *testing.T, c net.Conn, r *bufio.Reader) *http.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("keep-alive GET /fast: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestDevStopsAtOnce: Ctrl-C on `wxgate dev` while a browser holds a
// pre-connection (connected, never sent a byte) and an idle keep-alive
// connection ends the process at once, cleanly.
func TestDevStopsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildWxgate(t)
	port := freePort(t)
	public := "http://127.0.0.1:" + port
	p := startDev(t, bin, t.TempDir(), gatewayEnv(port, public, "WXGATE_SERVER_LOG_LEVEL=info"))
	pre, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	ka, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	_ = ka.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(ka, "GET /_wxgate/jwks.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(ka), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	sent := time.Now()
	p.signal(t, syscall.SIGINT)
	took := p.exitWithin(t, sent, 10*time.Second)
	t.Logf("dev exited %s after SIGINT", took)
	if took > 1500*time.Millisecond {
		t.Errorf("dev took %s to stop after Ctrl-C with idle connections open, want well under 1.5s", took)
	}
	if p.err != nil {
		t.Errorf("exit: %v, want 0\n%s", p.err, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", p.stderr)
	}
}
