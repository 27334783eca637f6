package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStartFlood sends 100,000 GET /_wxgate/start with a 2 KiB return URL
// from one address to the built gateway, as the attack that once took its
// RSS from 24 MB to 839 MB did. The gateway must refuse the flood beyond
// its per-client bound with 429 (counted in /metrics), grow by less than
// 32 MiB, and log in another client, on another address, during and after
// the flood.
func TestStartFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 100,000 requests to the built binary")
	}
	const floods, limit = 100_000, 32 << 20
	bin := buildWxgate(t)
	port, adminPort := freePort(t), freePort(t)
	public := "http://127.0.0.1:" + port
	dir := t.TempDir()
	p := startDev(t, bin, dir, gatewayEnv(port, public, "WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:"+adminPort))

	before := rss(t, p.cmd.Process.Pid)
	var admitted, refused, other atomic.Int64
	rd := "/" + strings.Repeat("a", 2000)
	var wg sync.WaitGroup
	const conns = 8
	errc := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errc <- flood(port, rd, floods/conns, i, &admitted, &refused, &other)
		}(i)
	}
	// Another client logs in while the flood runs.
	bob := newClient(t, public)
	bob.c.Transport = fromAddr("127.0.0.2")
	if openid := bob.login("bob"); openid == "" {
		t.Fatal("bob's login during the flood failed")
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := rss(t, p.cmd.Process.Pid)
	carol := newClient(t, public)
	carol.c.Transport = fromAddr("127.0.0.3")
	if openid := carol.login("carol"); openid == "" {
		t.Fatal("carol's login after the flood failed")
	}

	t.Logf("%d starts from one address: %d admitted, %d refused with 429, %d other; RSS %.1f MiB -> %.1f MiB (+%.1f MiB)",
		floods, admitted.Load(), refused.Load(), other.Load(), float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/(1<<20))
	if other.Load() != 0 || admitted.Load()+refused.Load() != floods {
		t.Errorf("answers: %d admitted, %d refused, %d other; want only 302 and 429", admitted.Load(), refused.Load(), other.Load())
	}
	if admitted.Load() > 300 {
		t.Errorf("%d starts admitted from one address, over max_pending_per_client (300)", admitted.Load())
	}
	if after-before > limit {
		t.Errorf("RSS grew by %.1f MiB, over %d MiB", float64(after-before)/(1<<20), limit>>20)
	}
	resp, err := http.Get("http://127.0.0.1:" + adminPort + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`wxgate_login_starts_refused_total\{reason="client"\} (\d+)`).FindSubmatch(metrics)
	if m == nil || string(m[1]) != strconv.FormatInt(refused.Load(), 10) {
		t.Errorf("wxgate_login_starts_refused_total{reason=\"client\"} = %s, want %d", m, refused.Load())
	}
}

// flood sends n starts on one keep-alive connection (a new one when the
// gateway closes it) and counts the answers.
func flood(port, rd string, n, id int, admitted, refused, other *atomic.Int64) error {
	var c net.Conn
	var r *bufio.Reader
	for i := 0; i < n; i++ {
		if c == nil {
			var err error
			if c, err = net.Dial("tcp", "127.0.0.1:"+port); err != nil {
				return err
			}
			r = bufio.NewReader(c)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := fmt.Fprintf(c, "GET /_wxgate/start?rd=%s&n=%d-%d HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUser-Agent: Mozilla/5.0 MicroMessenger/8.0.49\r\n\r\n", rd, id, i, port)
		if err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return fmt.Errorf("start %d: %w", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusFound:
			admitted.Add(1)
		case http.StatusTooManyRequests:
			refused.Add(1)
		default:
			other.Add(1)
		}
		if resp.Close {
			c.Close()
			c = nil
		}
	}
	if c != nil {
		c.Close()
	}
	return nil
}

// fromAddr is a transport whose connections come from the local address ip
// (any of 127.0.0.0/8 on loopback): another client to the gateway.
func fromAddr(ip string) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Transport{DialContext: d.DialContext}
}

// rss is a process's resident set size in bytes (Linux).
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}
