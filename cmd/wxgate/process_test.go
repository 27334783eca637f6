package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/syncbuf"
)

// Helpers for tests that run the built binary as a real process, the way
// an operator does (TestServeRefusesDevState, TestCrashDoesNotResurrect).

// shippedConfig is the absolute path of the shipped gateway.toml, for
// processes that run in another directory.
func shippedConfig(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buildWxgate builds the command into a temporary directory.
func buildWxgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wxgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// gatewayEnv is the environment of a gateway on 127.0.0.1:port whose
// public URL is public, logging warnings only.
func gatewayEnv(port, public string, extra ...string) []string {
	return append(append(os.Environ(),
		"WXGATE_SERVER_LISTEN=127.0.0.1:"+port,
		"WXGATE_SERVER_PUBLIC_URL="+public,
		"WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:0",
		"WXGATE_SERVER_LOG_LEVEL=warn",
	), extra...)
}

// serveEnv adds what `wxgate serve` with the shipped gateway.toml needs
// besides: the apps' secrets, and WeChat base URLs that nothing answers
// (no test here calls WeChat from serve).
func serveEnv(port, public string, extra ...string) []string {
	return gatewayEnv(port, public, append([]string{
		"WXGATE_OA_SECRET=serve-test-oa-secret",
		"WXGATE_WEBSITE_SECRET=serve-test-website-secret",
		"WXGATE_MINIPROGRAM_SECRET=serve-test-mp-secret",
		"WXGATE_APP_SECRET=serve-test-app-secret",
		"WXGATE_WECHAT_API_BASE=http://127.0.0.1:1",
		"WXGATE_WECHAT_OPEN_BASE=http://127.0.0.1:1",
		// No load balancer waits on these tests (TestServeDrainWindow
		// tests the delay).
		"WXGATE_SERVER_SHUTDOWN_DELAY=0s",
	}, extra...)...)
}

// proc is a wxgate process under test.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	// simURL is the simulator's URL from dev's banner; "" for serve.
	simURL string
	// done is closed once the process has exited; err is Wait's result.
	done chan struct{}
	err  error
}

// newProc prepares bin with args to run in dir; run starts it.
func newProc(t *testing.T, bin, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env, p.cmd.Stderr = dir, env, p.stderr
	return p
}

// run starts the process; it is killed at the end of the test if still
// running.
func (p *proc) run(t *testing.T) {
	t.Helper()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })
}

// startDev runs `wxgate dev` with the shipped config in dir and waits for
// its banner.
func startDev(t *testing.T, bin, dir string, env []string) *proc {
	t.Helper()
	p := newProc(t, bin, dir, env, "dev", "--config", shippedConfig(t), "--sim-listen", "127.0.0.1:0", "--demo-listen", "127.0.0.1:0")
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.run(t)
	banner := readUntil(t, stdout, "Press Ctrl-C")
	m := regexp.MustCompile(`simulator\s+(http://\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no simulator URL in the banner:\n%s", banner)
	}
	p.simURL = m[1]
	return p
}

// startServe runs `wxgate serve` with the shipped config in dir and waits
// until public answers.
func startServe(t *testing.T, bin, dir, public string, env []string) *proc {
	t.Helper()
	p := newProc(t, bin, dir, env, "serve", "--config", shippedConfig(t))
	p.run(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("wxgate serve exited: %v\n%s", p.err, p.stderr)
		default:
		}
		if resp, err := http.Get(public + "/_wxgate/jwks.json"); err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("wxgate serve not answering within 30s\n%s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveRefuses runs `wxgate serve` in dir, expecting it to exit non-zero
// before it listens on port, and returns what it wrote to stderr.
func serveRefuses(t *testing.T, bin, dir, port string, env []string) string {
	t.Helper()
	p := newProc(t, bin, dir, env, "serve", "--config", shippedConfig(t))
	p.run(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			if p.err == nil {
				t.Errorf("wxgate serve exited 0, want a refusal\n%s", p.stderr)
			}
			return p.stderr.String()
		default:
		}
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			t.Errorf("wxgate serve started and listens; want a refusal\n%s", p.stderr)
			p.kill(t)
			return p.stderr.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("wxgate serve neither exited nor listened within 30s\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and expects a clean exit (the snapshot is written).
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of SIGTERM\n%s", p.stderr)
	}
	if p.err != nil {
		t.Fatalf("%s after SIGTERM: %v\n%s", p.cmd.Args[1], p.err, p.stderr)
	}
}

// kill ends the process with SIGKILL, as a crash or the OOM killer would.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// client is a WeChat browser with a cookie jar that does not follow
// redirects, talking to the gateway at public.
type client struct {
	t      *testing.T
	public string
	c      *http.Client
}

func newClient(t *testing.T, public string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, public: public, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request and returns the response with its body read.
func (c *client) do(method, u string, hdr map[string]string, body string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0.49")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp, b.Bytes()
}

// next GETs u, expects a redirect and returns where to.
func (c *client) next(u string) string {
	c.t.Helper()
	resp, _ := c.do("GET", u, nil, "")
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		c.t.Fatalf("GET %s: %d %q", u, resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.String()
}

// login walks the official-account login as user through the simulator
// (TestDev shows the steps) and returns the openid the gateway gives.
func (c *client) login(user string) string {
	c.t.Helper()
	auth := c.next(c.next(c.public + "/"))
	cb := c.next(strings.TrimSuffix(auth, "#wechat_redirect") + "&sim_user=" + user + "&sim_decision=allow")
	if final := c.next(cb); final != c.public+"/" {
		c.t.Fatalf("after the callback: %q, want %s/", final, c.public)
	}
	openid, status := c.whoami()
	if openid == "" {
		c.t.Fatalf("userinfo right after logging in %s: %d", user, status)
	}
	return openid
}

// whoami asks the gateway who the cookie belongs to: the openid, or ""
// and the status when it is not logged in.
func (c *client) whoami() (string, int) {
	c.t.Helper()
	resp, body := c.do("GET", c.public+"/_wxgate/userinfo", map[string]string{"Accept": "application/json"}, "")
	var id struct{ OpenID string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &id) != nil {
		return "", resp.StatusCode
	}
	return id.OpenID, resp.StatusCode
}

// pair is a mini-program token pair.
type pair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	OpenID       string `json:"openid"`
}

// miniprogramLogin logs user in as the shipped config's mini program with a
// code from the simulator at simURL.
func (c *client) miniprogramLogin(simURL, user string) pair {
	c.t.Helper()
	const mp = "wxd0c5a1e0000000c3" // the shipped gateway.toml's mini program
	resp, body := c.do("POST", simURL+"/_sim/code", map[string]string{"Content-Type": "application/json"}, `{"appid":"`+mp+`","user":"`+user+`"}`)
	var code struct{ Code string }
	if err := json.Unmarshal(body, &code); err != nil || code.Code == "" {
		c.t.Fatalf("simulator code: %d %s", resp.StatusCode, body)
	}
	resp, body = c.do("POST", c.public+"/_wxgate/miniprogram/login", map[string]string{"Content-Type": "application/json"}, `{"code":"`+code.Code+`"}`)
	var p pair
	if err := json.Unmarshal(body, &p); err != nil || p.AccessToken == "" || p.RefreshToken == "" {
		c.t.Fatalf("miniprogram login: %d %s", resp.StatusCode, body)
	}
	return p
}

// bearer calls the shipped config's API route with an access token and
// returns the status and the openid the upstream saw.
func (c *client) bearer(access string) (int, string) {
	c.t.Helper()
	resp, body := c.do("GET", c.public+"/api/me", map[string]string{"Authorization": "Bearer " + access, "Accept": "application/json"}, "")
	var seen struct {
		Headers map[string]string `json:"headers"`
	}
	_ = json.Unmarshal(body, &seen)
	return resp.StatusCode, seen.Headers["X-Wechat-Openid"]
}

// findFile returns the path, relative to dir, of the first file named name
// under dir, or "".
func findFile(t *testing.T, dir, name string) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return err
		}
		if !d.IsDir() && d.Name() == name {
			found, err = filepath.Rel(dir, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// exists reports whether dir/rel exists; it fails on any other error.
func exists(t *testing.T, dir, rel string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dir, rel))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}
