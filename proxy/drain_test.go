package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/proxy"
)

// seqUpstream records the seq query parameter of every request it gets;
// /public/slow answers after 150ms.
type seqUpstream struct {
	*httptest.Server
	seen sync.Map // seq string -> true
}

func newSeqUpstream(t *testing.T) *seqUpstream {
	u := &seqUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.seen.Store(r.URL.Query().Get("seq"), true)
		if r.URL.Path == "/public/slow" {
			time.Sleep(150 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// keepAliveClient is an HTTP/1.1 client on raw sockets that reuses its
// connection unless a response says Connection: close, as browsers and
// load balancers do.
type keepAliveClient struct {
	addr string
	conn net.Conn
	cr   *countingReader
	br   *bufio.Reader
}

// outcome of one request.
type outcome struct {
	seq string
	// answered: a whole response came. noReply: the connection ended
	// before any byte of one (a client may send the request again).
	// partial: it ended inside a response.
	answered, noReply, partial bool
	// closes: the response said Connection: close.
	closes bool
	// refused: no connection could be opened (nothing was sent).
	refused bool
	at      time.Time
	err     error
}

func (k *keepAliveClient) do(path, seq string) outcome {
	o := outcome{seq: seq}
	if k.conn == nil {
		c, err := net.DialTimeout("tcp", k.addr, time.Second)
		if err != nil {
			o.refused, o.err = true, err
			return o
		}
		k.conn, k.cr = c, &countingReader{r: c}
		k.br = bufio.NewReader(k.cr)
	}
	_ = k.conn.SetDeadline(time.Now().Add(3 * time.Second))
	before := k.cr.n.Load() - int64(k.br.Buffered())
	_, err := fmt.Fprintf(k.conn, "GET %s?seq=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path, seq)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(k.br, nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	o.at = time.Now()
	switch {
	case err == nil:
		o.answered, o.closes = true, resp.Close
	case k.cr.n.Load()-int64(k.br.Buffered()) > before || resp != nil:
		o.partial, o.err = true, err
	default:
		o.noReply, o.err = true, err
	}
	if err != nil || o.closes {
		k.conn.Close()
		k.conn = nil
	}
	return o
}

// TestDrainKeepAlive sends requests on keep-alive connections across a
// drain and a shutdown: busy clients in a loop (one of them slow, so a
// request is in flight when the listener closes), and idle keep-alive
// connections that each send a request right as the shutdown begins. No
// request may be read and then left unanswered, no response may be cut,
// and once the drain has begun every response must say Connection: close
// so that no client sends another request on a connection about to close.
func TestDrainKeepAlive(t *testing.T) {
	up := newSeqUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL})
	addr := strings.TrimPrefix(e.url, "http://")
	var seq atomic.Int64
	next := func() string { return fmt.Sprint(seq.Add(1)) }

	var mu sync.Mutex // guards outcomes
	var outcomes []outcome
	record := func(o outcome) { mu.Lock(); outcomes = append(outcomes, o); mu.Unlock() }

	// Idle keep-alive connections, used once before the drain.
	idle := make([]*keepAliveClient, 24)
	for i := range idle {
		idle[i] = &keepAliveClient{addr: addr}
		if o := idle[i].do("/public/x", next()); !o.answered || o.closes {
			t.Fatalf("warm-up request: %+v", o)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := &keepAliveClient{addr: addr}
			path := "/public/x"
			if i == 0 {
				path = "/public/slow"
			}
			for n := 0; n < 2000; n++ {
				o := k.do(path, next())
				record(o)
				select {
				case <-stop:
					return
				default:
				}
				if o.refused {
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // traffic before the drain
	e.gw.Drain()
	// Responses composed before Drain may still be on their way; after
	// this, every response must say close.
	time.Sleep(100 * time.Millisecond)
	drained := time.Now()
	time.Sleep(100 * time.Millisecond) // the rest of a short shutdown_delay

	// The idle connections send their requests over 2.4ms, and the
	// shutdown begins 1ms in: some are answered, some race with the close.
	var iwg sync.WaitGroup
	for i, k := range idle {
		iwg.Add(1)
		go func() {
			defer iwg.Done()
			time.Sleep(time.Duration(i) * 100 * time.Microsecond)
			record(k.do("/public/x", next()))
		}()
	}
	shut := make(chan error, 1)
	go func() {
		time.Sleep(time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- e.gw.Shutdown(ctx)
	}()
	iwg.Wait()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	close(stop)
	wg.Wait()

	var answered, noReply, refused int
	for _, o := range outcomes {
		_, processed := up.seen.Load(o.seq)
		switch {
		case o.partial:
			t.Errorf("request %s: the connection ended inside the response: %v", o.seq, o.err)
		case o.noReply && processed:
			t.Errorf("request %s reached the upstream but got no answer: %v", o.seq, o.err)
		case o.answered && !o.closes && o.at.After(drained):
			t.Errorf("request %s answered %s after the drain began without Connection: close", o.seq, o.at.Sub(drained))
		}
		switch {
		case o.answered:
			answered++
		case o.noReply:
			noReply++
		case o.refused:
			refused++
		}
	}
	t.Logf("%d requests: %d answered, %d unanswered and unread (safe to retry), %d refused at connect", len(outcomes), answered, noReply, refused)
}

// TestShutdownDelayConfig: shutdown_delay's default is 5s, an explicit 0 is
// kept (no delay), from the file or the environment; out-of-range values
// are refused with the key named.
func TestShutdownDelayConfig(t *testing.T) {
	const base = `[server]
public_url = "http://127.0.0.1:8080"
%s
[wechat.official_account]
appid = "wx00000000000000a1"
secret = "s"
[[upstream]]
name = "app"
url = "http://127.0.0.1:9400"
`
	for _, tc := range []struct {
		name, server string
		env          []string
		delay, timeo time.Duration
		problem      string
	}{
		{name: "defaults", delay: 5 * time.Second, timeo: 25 * time.Second},
		{name: "zero delay kept", server: `shutdown_delay = "0s"`, delay: 0, timeo: 25 * time.Second},
		{name: "zero delay from the environment", env: []string{"WXGATE_SERVER_SHUTDOWN_DELAY=0s"}, delay: 0, timeo: 25 * time.Second},
		{name: "set", server: "shutdown_delay = \"1s\"\nshutdown_timeout = \"2m\"", delay: time.Second, timeo: 2 * time.Minute},
		{name: "negative delay", server: `shutdown_delay = "-1s"`, problem: "server.shutdown_delay"},
		{name: "long delay", server: `shutdown_delay = "6m"`, problem: "server.shutdown_delay"},
		{name: "negative timeout", server: `shutdown_timeout = "-1s"`, problem: "server.shutdown_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "gateway.toml")
			if err := os.WriteFile(path, []byte(fmt.Sprintf(base, tc.server)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := proxy.LoadConfig(path, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			err = errors.Join(cfg.Provision(), cfg.Validate())
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("Validate() = %v, want a problem with %s", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Server.ShutdownDelayOrDefault(); got != tc.delay {
				t.Errorf("shutdown_delay = %s, want %s", got, tc.delay)
			}
			if got := cfg.Server.ShutdownTimeout; got != tc.timeo {
				t.Errorf("shutdown_timeout = %s, want %s", got, tc.timeo)
			}
		})
	}
}
