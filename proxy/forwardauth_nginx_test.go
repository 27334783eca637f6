package proxy_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// frontProxy is a real proxy server in front of the test upstream that
// asks wxgate's forward auth, built from an example under deploy/.
type frontProxy struct {
	name string
	bin  string
	// start writes its config into dir from the example, with the proxy on
	// listen, wxgate at gateway and the app at app, and returns its command.
	start func(t *testing.T, dir, listen, gateway, app string) *exec.Cmd
}

var frontProxies = []frontProxy{
	{name: "nginx", bin: "/usr/sbin/nginx", start: startNginx},
	{name: "caddy", bin: "/usr/bin/caddy", start: startCaddy},
}

// TestForwardAuthFrontProxies runs deploy/nginx/wxgate.conf and
// deploy/caddy/Caddyfile in the real servers: an anonymous browser is sent
// to the login, after it the app behind the proxy sees the identity (and
// no forged copy), and a deny route is 403.
func TestForwardAuthFrontProxies(t *testing.T) {
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			e, front := fp.run(t)
			listen := strings.TrimPrefix(front, "http://")

			b := e.browser(weChatUA)
			start := b.expectRedirect(front + "/orders?id=7")
			if want := front + "/_wxgate/start?rd=" + "http%3A%2F%2F" + strings.ReplaceAll(listen, ":", "%3A") + "%2Forders%3Fid%3D7"; !strings.HasPrefix(start, want) {
				t.Fatalf("anonymous GET /orders redirects to %q, want %q...", start, want)
			}
			auth := b.expectRedirect(start)
			back := b.expectRedirect(b.authorize(auth, "alice", "allow"))
			if back != front+"/orders?id=7" {
				t.Fatalf("the login returns to %q, want %q", back, front+"/orders?id=7")
			}
			alice := e.user("alice")
			got := b.upstreamView(front+"/orders?id=7", map[string]string{
				"X-WeChat-OpenID": "forged", "X-WeChat-Phone": "13800000000", "X-Forwarded-User": "forged",
				// Spellings a CGI/FastCGI app (PHP) reads as the same
				// names: HTTP_X_WECHAT_OPENID.
				"X_WeChat_OpenID": "forged", "X-WeChat_UnionID": "forged", "X_WeChat-AppID": "forged", "X_Forwarded_User": "forged",
				"Cookie": "app_pref=dark",
			})
			// The app's own cookies pass; wxgate's session ID does not.
			if c := strings.Join(got.Headers["Cookie"], "; "); c != "app_pref=dark" {
				t.Errorf("the app sees Cookie %q, want only its own app_pref=dark", c)
			}
			for k := range got.Headers {
				if strings.Contains(k, "_") {
					t.Errorf("the app sees %s = %q: an identity header's other spelling passed %s", k, got.Headers[k], fp.name)
				}
			}
			want := map[string]string{
				"X-Wechat-Openid": alice.OpenID, "X-Wechat-Unionid": alice.UnionID, "X-Wechat-Appid": oaID,
				"X-Wechat-Scope": "snsapi_base", "X-Forwarded-User": alice.UnionID, "X-Wechat-Phone": "",
			}
			for h, v := range want {
				if g := strings.Join(got.Headers[h], ","); g != v {
					t.Errorf("the app sees %s = %q, want %q", h, g, v)
				}
			}
			if got.URI != "/orders?id=7" {
				t.Errorf("the app sees %q, want /orders?id=7", got.URI)
			}
			if first(got.Headers["X-Wechat-Identity"]) == "" {
				t.Error("the app sees no X-WeChat-Identity")
			}
			for _, who := range []*browser{b, e.browser(weChatUA)} {
				if resp, _ := who.get(front+"/denied/x", nil); resp.StatusCode != http.StatusForbidden {
					t.Errorf("GET /denied/x: status %d, want 403", resp.StatusCode)
				}
			}
			// A public route passes without identity, and without the
			// client's forged one.
			pub := b.upstreamView(front+"/public/a", map[string]string{"X-WeChat-OpenID": "forged"})
			if c, ok := pub.Headers["Cookie"]; ok {
				t.Errorf("on a public route the app sees Cookie %q, want none (the browser has only wxgate's)", c)
			}
			for _, h := range identityHeaders {
				if v, ok := pub.Headers[h]; ok {
					t.Errorf("on a public route the app sees %s = %q", h, v)
				}
			}
			// The question itself is the proxy's alone, in either form: a
			// browser asking it would read its own signed assertion.
			for _, path := range []string{"/_wxgate/auth", "/_wxgate/auth/orders", "/_wxgate/auth/", "/_wxgate/auth%2Forders", "/_wxgate/authx"} {
				resp, _ := b.get(front+path, map[string]string{"X-Forwarded-Uri": "/orders"})
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s through %s: status %d, want 404", path, fp.name, resp.StatusCode)
				}
				if v := resp.Header.Get("X-WeChat-Identity"); v != "" {
					t.Errorf("GET %s through %s: the browser got its assertion", path, fp.name)
				}
			}
		})
	}
}

// run starts a gateway whose public URL is the proxy's, and the proxy in
// front of it and the test upstream; it skips when the proxy is not
// installed (never in CI, which sets WXGATE_REQUIRE_FORWARD_AUTH).
func (fp frontProxy) run(t *testing.T) (e *env, front string) {
	t.Helper()
	if _, err := os.Stat(fp.bin); err != nil {
		if os.Getenv("WXGATE_REQUIRE_FORWARD_AUTH") == "1" {
			t.Fatalf("%s: %v (WXGATE_REQUIRE_FORWARD_AUTH=1)", fp.bin, err)
		}
		t.Skipf("%s: %v", fp.bin, err)
	}
	listen := freeAddr(t)
	front = "http://" + listen
	e = newEnvOpts(t, envOptions{publicURL: front, serverKeys: `trusted_proxies = ["127.0.0.1/32"]`})
	dir := t.TempDir()
	cmd := fp.start(t, dir, listen, strings.TrimPrefix(e.url, "http://"), strings.TrimPrefix(e.upstream.URL, "http://"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", fp.name, out.String())
			if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				t.Logf("error.log:\n%s", b)
			}
		}
	})
	waitListening(t, listen, exited)
	return e, front
}

// example reads a file under deploy/ and points it at the test's servers.
func example(t *testing.T, path string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", path))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("%s has no %q to replace", path, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	return s
}

func startNginx(t *testing.T, dir, listen, gateway, app string) *exec.Cmd {
	site := example(t, "nginx/wxgate.conf",
		"listen 80;", "listen "+listen+";",
		"127.0.0.1:8080", gateway,
		"127.0.0.1:3000", app)
	writeFile(t, filepath.Join(dir, "wxgate.conf"), site)
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/wxgate.conf;
}
`, dir)
	writeFile(t, filepath.Join(dir, "nginx.conf"), conf)
	return exec.Command("/usr/sbin/nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
}

func startCaddy(t *testing.T, dir, listen, gateway, app string) *exec.Cmd {
	site := example(t, "caddy/Caddyfile",
		"app.example.com {", "http://"+listen+" {",
		"127.0.0.1:8080", gateway,
		"127.0.0.1:3000", app)
	writeFile(t, filepath.Join(dir, "Caddyfile"), "{\n\tadmin off\n\tauto_https off\n}\n\n"+site)
	cmd := exec.Command("/usr/bin/caddy", "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	return cmd
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitListening waits until addr accepts connections, or the server
// exits.
func waitListening(t *testing.T, addr string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		select {
		case <-exited:
			t.Fatalf("the server exited before listening on %s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
