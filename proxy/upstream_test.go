package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/syncbuf"
)

// liveUpstream is a keep-alive upstream on raw sockets that behaves the way
// Node, nginx or Apache do: it answers request after request on one
// connection and closes a connection left idle longer than its keep-alive
// timeout, without a word, as they all do.
type liveUpstream struct {
	t testing.TB
	// idle closes a connection that waits this long for its next request
	// (0: never).
	idle time.Duration
	// advertise sends "Keep-Alive: timeout=<idle in seconds>" with answers.
	advertise bool
	// read replaces readRawRequest; it may give up on a request half read
	// (false), which closes the connection.
	read func(r *bufio.Reader) (upstreamRequest, bool)
	// answer, if set, answers the n-th request (from 1) and reports whether
	// the connection stays open. The default answers 200 "ok".
	answer func(c net.Conn, n int64, req upstreamRequest) bool

	addr     string
	accepts  atomic.Int64 // connections accepted
	idleShut atomic.Int64 // connections this upstream closed for idleness
	peerShut atomic.Int64 // connections the gateway closed between requests
	served   atomic.Int64 // requests read whole

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	got   []upstreamRequest
}

// newLiveUpstream starts an upstream; set, if given, sets its knobs before
// it listens.
func newLiveUpstream(t testing.TB, idle time.Duration, set ...func(*liveUpstream)) *liveUpstream {
	u := &liveUpstream{t: t, idle: idle, conns: map[net.Conn]bool{}}
	for _, f := range set {
		f(u)
	}
	u.listen("127.0.0.1:0")
	t.Cleanup(u.stop)
	return u
}

func (u *liveUpstream) URL() string { return "http://" + u.addr }

func (u *liveUpstream) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		u.t.Fatal(err)
	}
	u.mu.Lock()
	u.ln, u.addr = ln, ln.Addr().String()
	u.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepts.Add(1)
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
}

// stop closes the listener and every connection, as a process exiting does.
func (u *liveUpstream) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ln.Close()
	for c := range u.conns {
		c.Close()
		delete(u.conns, c)
	}
}

// restart is an upstream deploy: every connection closes at once and a new
// process listens on the same port.
func (u *liveUpstream) restart() {
	u.stop()
	u.listen(u.addr)
}

func (u *liveUpstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.got...)
}

func (u *liveUpstream) serve(c net.Conn) {
	defer func() {
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	read := u.read
	if read == nil {
		read = readRawRequest
	}
	for {
		if u.idle > 0 {
			_ = c.SetReadDeadline(time.Now().Add(u.idle))
		}
		if _, err := r.Peek(1); err != nil {
			c.Close() // before it is counted: tests wait on the counts
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				u.idleShut.Add(1)
			} else {
				u.peerShut.Add(1)
			}
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		req, ok := read(r)
		if !ok {
			return
		}
		n := u.served.Add(1)
		u.mu.Lock()
		u.got = append(u.got, req)
		u.mu.Unlock()
		if u.answer != nil {
			if !u.answer(c, n, req) {
				return
			}
			continue
		}
		ka := ""
		if u.advertise {
			ka = fmt.Sprintf("Keep-Alive: timeout=%d\r\n", int(u.idle/time.Second))
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"+ka+"\r\nok"); err != nil {
			return
		}
	}
}

// pollUntil polls cond until it holds, failing the test after limit.
func pollUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// call sends one request through the gateway on a new client connection
// and returns the status and body; 0 when no answer came.
func call(t testing.TB, e *env, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// A keep-alive client: a client's "Connection: close" would make the
	// gateway drop its upstream connection too.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: tr}).Do(req)
	if err != nil {
		t.Logf("%s %s: %v", method, path, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// retries returns the gateway's wxgate_upstream_retries_total lines.
func retries(e *env) string {
	return grepLines(e.scrape(), `wxgate_upstream_retries_total{`)
}

// TestUpstreamIdleTimeouts: an upstream closing keep-alive connections
// idle past its timeout (Node and Apache 5 s) must never cost a request a
// 502 (issue 9, finding 1).
func TestUpstreamIdleTimeouts(t *testing.T) {
	cases := []struct {
		name      string
		idle      time.Duration // the upstream's keep-alive timeout
		advertise bool          // it says so in Keep-Alive: timeout=
		keys      string        // the gateway's [[upstream]] keys
		// gatewayFirst: the gateway must close the idle connection
		// before the upstream does.
		gatewayFirst bool
		retry        string // the retry reason counted, "" none
	}{
		// The gateway keeps connections longer than the upstream: the
		// closed connection is noticed before the request goes out.
		{name: "upstream closes after 1s", idle: time.Second, retry: `reason="closed",upstream="app"} 1`},
		// Node's default (5s) against the gateway's default keepalive_idle
		// (4s): the gateway lets go first.
		{name: "upstream closes after 5s", idle: 5 * time.Second, gatewayFirst: true},
		{name: "learned from Keep-Alive timeout=1", idle: time.Second, advertise: true, keys: `keepalive_idle = "30s"`, retry: `reason="expired",upstream="app"} 1`},
		{name: "keepalive_idle below the upstream's", idle: 3 * time.Second, keys: `keepalive_idle = "1s"`, gatewayFirst: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newLiveUpstream(t, tc.idle, func(u *liveUpstream) { u.advertise = tc.advertise })
			e := newEnvOpts(t, envOptions{appUpstream: u.URL(), appKeys: tc.keys})
			if code, body := call(t, e, "GET", "/public/a", nil); code != 200 || body != "ok" {
				t.Fatalf("first GET = %d %q, want 200 ok", code, body)
			}
			if tc.gatewayFirst {
				pollUntil(t, 6*time.Second, "the gateway kept its idle connection open", func() bool { return u.peerShut.Load() == 1 })
			} else {
				pollUntil(t, tc.idle+3*time.Second, "the upstream never closed the idle connection", func() bool { return u.idleShut.Load() == 1 })
			}
			for _, m := range []string{"GET", "POST"} {
				if code, body := call(t, e, m, "/public/b", []byte("x=1")); code != 200 || body != "ok" {
					t.Errorf("%s after the idle close = %d %q, want 200 ok", m, code, body)
				}
			}
			got := retries(e)
			if tc.retry == "" && got != "" || !strings.Contains(got, tc.retry) {
				t.Errorf("retries:\n%s\nwant %q", got, tc.retry)
			}
			if n := u.served.Load(); n != 3 {
				t.Errorf("upstream served %d requests, want 3 (none twice)", n)
			}
		})
	}
}

// TestUpstreamRestart: after an upstream restart every pooled connection
// is dead; the first request on each must still be answered, a POST with
// its body delivered once (issue 9, finding 1).
func TestUpstreamRestart(t *testing.T) {
	const pooled = 3
	// Hold the first answers until all are in, so that each has its own
	// connection and the pool ends up holding three.
	var arrived sync.WaitGroup
	arrived.Add(pooled)
	u := newLiveUpstream(t, 0, func(u *liveUpstream) {
		u.answer = func(c net.Conn, n int64, req upstreamRequest) bool {
			if n <= pooled {
				arrived.Done()
				arrived.Wait()
			}
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+fmt.Sprint(len(req.body)+2)+"\r\n\r\nok"+string(req.body))
			return err == nil
		}
	})
	e := newEnvOpts(t, envOptions{appUpstream: u.URL()})
	var wg sync.WaitGroup
	for range pooled {
		wg.Go(func() {
			if code, _ := call(t, e, "GET", "/public/warm", nil); code != 200 {
				t.Errorf("warm-up GET = %d, want 200", code)
			}
		})
	}
	wg.Wait()
	if n := u.accepts.Load(); n != pooled {
		t.Fatalf("%d upstream connections after the warm-up, want %d", n, pooled)
	}
	u.restart()
	for i, m := range []string{"GET", "POST", "DELETE", "GET"} {
		body := fmt.Sprintf("n=%d", i)
		if code, got := call(t, e, m, "/public/after", []byte(body)); code != 200 || got != "ok"+body {
			t.Errorf("%s #%d after the restart = %d %q, want 200 %q", m, i, code, got, "ok"+body)
		}
	}
	posts := 0
	for _, r := range u.requests() {
		if r.method == "POST" {
			posts++
		}
	}
	if posts != 1 {
		t.Errorf("the upstream got the POST %d times, want 1", posts)
	}
	if got := retries(e); !strings.Contains(got, `reason="closed",upstream="app"} 3`) {
		t.Errorf("retries:\n%s\nwant 3 for closed connections", got)
	}
}

// TestUpstreamNoReplay: a request the upstream may have acted on is never
// sent again: a body that started streaming, a non-idempotent request
// that went out whole, a fresh connection's failure, a timeout.
func TestUpstreamNoReplay(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	cases := []struct {
		name   string
		warm   bool // a first request leaves a pooled connection
		method string
		body   []byte
		keys   string
		// fail says how the upstream fails request n: "half" reads the
		// head and 1000 bytes of the body and closes, "silent" reads the
		// request and closes without answering, "stall" never answers.
		fail     string
		want     int // status
		wantSeen int // times the upstream saw the request's head
	}{
		{name: "streamed body, connection dies", warm: true, method: "POST", body: big, fail: "half", want: 502, wantSeen: 1},
		{name: "chunked body, connection dies", warm: true, method: "POST", body: nil, fail: "half", want: 502, wantSeen: 1},
		{name: "POST sent whole, closed unanswered", warm: true, method: "POST", body: []byte("pay=1"), fail: "silent", want: 502, wantSeen: 1},
		{name: "PATCH sent whole, closed unanswered", warm: true, method: "PATCH", fail: "silent", want: 502, wantSeen: 1},
		{name: "GET on a fresh connection, closed unanswered", method: "GET", fail: "silent", want: 502, wantSeen: 1},
		{name: "GET times out", warm: true, method: "GET", keys: `timeout = "300ms"`, fail: "stall", want: 504, wantSeen: 1},
		// The one case sent again: an idempotent request without a body
		// whose pooled connection closed before any answer.
		{name: "GET sent whole, closed unanswered", warm: true, method: "GET", fail: "silent", want: 200, wantSeen: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen atomic.Int64
			failAt := int64(1)
			if tc.warm {
				failAt = 2
			}
			read := func(r *bufio.Reader) (upstreamRequest, bool) {
				if tc.fail != "half" {
					return readRawRequest(r)
				}
				if m, _ := r.Peek(4); string(m) != "POST" {
					// The warm-up: read it the usual way.
					return readRawRequest(r)
				}
				seen.Add(1)
				for { // the head
					l, err := r.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				_, _ = io.CopyN(io.Discard, r, 1000)
				return upstreamRequest{}, false
			}
			answer := func(c net.Conn, n int64, req upstreamRequest) bool {
				if req.method == tc.method && tc.fail != "half" {
					seen.Add(1)
				}
				switch {
				case n == failAt && tc.fail == "silent":
					return false
				case n == failAt && tc.fail == "stall":
					time.Sleep(time.Second)
					return false
				}
				_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return err == nil
			}
			u := newLiveUpstream(t, 0, func(u *liveUpstream) { u.read, u.answer = read, answer })
			e := newEnvOpts(t, envOptions{appUpstream: u.URL(), appKeys: tc.keys})
			if tc.warm {
				if code, _ := call(t, e, "OPTIONS", "/public/warm", nil); code != 200 {
					t.Fatalf("warm-up = %d, want 200", code)
				}
			}
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.body == nil && tc.fail == "half" {
				// Unknown length: net/http sends it chunked.
				body = io.MultiReader(bytes.NewReader(big), strings.NewReader(""))
			}
			req, _ := http.NewRequest(tc.method, e.url+"/public/x", body)
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			code := 0
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			if code != tc.want {
				t.Errorf("%s = %d (%v), want %d", tc.method, code, err, tc.want)
			}
			if n := seen.Load(); n != int64(tc.wantSeen) {
				t.Errorf("the upstream saw the %s %d times, want %d", tc.method, n, tc.wantSeen)
			}
		})
	}
}

// TestUpstreamCutBody: an upstream answer that stops before its framing
// says it ends must not reach the client as a complete one, and the dead
// connection must not serve the next request (issue 9, finding 2).
func TestUpstreamCutBody(t *testing.T) {
	large := 300 << 10 // above the size read whole
	cases := []struct {
		name string
		cut  string // what the upstream sends before it closes
		// want502: the cut is found before the client got anything.
		want502 bool
		// complete: the content all came, only the framing's last CRLF
		// did not; the client gets it whole.
		complete bool
	}{
		{name: "chunked, at a chunk boundary", cut: "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{name: "chunked, inside a chunk", cut: "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na\r\nhel"},
		{name: "chunked, before the final CRLF", cut: "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", complete: true},
		{name: "content-length, small", cut: "Content-Length: 100\r\n\r\nhello", want502: true},
		{name: "content-length, large", cut: fmt.Sprintf("Content-Length: %d\r\n\r\n%s", large, strings.Repeat("x", 100<<10))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newLiveUpstream(t, 0, func(u *liveUpstream) {
				u.answer = func(c net.Conn, n int64, _ upstreamRequest) bool {
					if n == 1 {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"+tc.cut)
						return false
					}
					_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					return err == nil
				}
			})
			var log syncbuf.Buffer
			e := newEnvOpts(t, envOptions{appUpstream: u.URL(), log: &log})
			rc := e.dial()
			_ = rc.conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(rc.conn, "GET /public/cut HTTP/1.1\r\nHost: "+strings.TrimPrefix(e.url, "http://")+"\r\nX-Request-ID: ignored\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			var got []byte
			switch {
			case tc.want502:
				// A whole 502: the connection may stay open.
				if resp, _ := rc.read(); resp == nil || resp.StatusCode != 502 {
					t.Errorf("client got %v, want a 502", resp)
				}
			case tc.complete:
				if resp, body := rc.read(); resp == nil || resp.StatusCode != 200 || body != "hello" {
					t.Errorf("client got %v %q, want 200 hello", resp, body)
				}
			default:
				var err error
				got, err = io.ReadAll(rc.r)
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("the client connection stayed open after %q", got)
				}
			}
			head, body, _ := bytes.Cut(got, []byte("\r\n\r\n"))
			switch {
			case tc.want502 || tc.complete:
			case bytes.Contains(body, []byte("0\r\n\r\n")):
				t.Errorf("client got a terminating chunk: %q", got)
			case !tc.want502 && bytes.Contains(head, []byte("Content-Length")) && len(body) >= large:
				t.Errorf("client got %d body bytes, the whole length", len(body))
			case !tc.want502 && !bytes.HasPrefix(head, []byte("HTTP/1.1 200")):
				t.Errorf("client got %.200q, want the 200 the upstream started", got)
			}
			if code, body := call(t, e, "GET", "/public/next", nil); code != 200 || body != "ok" {
				t.Errorf("next GET = %d %q, want 200 ok", code, body)
			}
			if n := u.accepts.Load(); n != 2 {
				t.Errorf("%d upstream connections, want 2 (the cut one never reused)", n)
			}
			if got := retries(e); got != "" {
				t.Errorf("the cut connection was offered again:\n%s", got)
			}
			if got := grepLines(e.scrape(), `wxgate_upstream_responses_cut_total{`); !strings.Contains(got, `reason="closed",upstream="app"} 1`) {
				t.Errorf("cut metric:\n%s\nwant 1", got)
			}
			pollUntil(t, 2*time.Second, "no WARN log line for the cut", func() bool {
				return strings.Contains(log.String(), "level=WARN") && strings.Contains(log.String(), "upstream=app") && strings.Contains(log.String(), "request_id=")
			})
		})
	}
}

// TestUpstreamSwitchedProtocols: an upstream that answers 101 to a request
// that asked for no upgrade (wxgate drops Upgrade) gets a 502, and its
// connection, which no longer speaks HTTP, never carries another request:
// fasthttp takes a 101 for a complete answer and pools the connection, and
// what the upstream sent on it next went to the next user.
func TestUpstreamSwitchedProtocols(t *testing.T) {
	var mu sync.Mutex
	switched := map[net.Conn]bool{}
	u := newLiveUpstream(t, 0, func(u *liveUpstream) {
		u.answer = func(c net.Conn, n int64, _ upstreamRequest) bool {
			mu.Lock()
			defer mu.Unlock()
			s := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
			switch {
			case switched[c]:
				// Another protocol's bytes, which happen to parse.
				s = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot yours"
			case n == 1:
				switched[c] = true
				s = "HTTP/1.1 101 Switching Protocols\r\n\r\n"
			}
			_, err := io.WriteString(c, s)
			return err == nil
		}
	})
	e := newEnvOpts(t, envOptions{appUpstream: u.URL()})
	if code, _ := call(t, e, "GET", "/public/a", nil); code != 502 {
		t.Errorf("GET answered 101 = %d, want 502", code)
	}
	for i := range 2 {
		if code, body := call(t, e, "GET", "/public/b", nil); code != 200 || body != "ok" {
			t.Errorf("GET #%d after the 101 = %d %q, want 200 ok", i, code, body)
		}
	}
}

// TestUpstreamEarlyAnswer: an upstream that answers before reading a large
// body (a 413 for a body over its limit) and closes, as Go's net/http does
// half a second later, gets its answer to the client, not a 502: the
// gateway's writes fail with a reset once the upstream has closed.
func TestUpstreamEarlyAnswer(t *testing.T) {
	for _, tc := range []struct{ name, close string }{
		{name: "connection close", close: "Connection: close\r\n"},
		{name: "closed unannounced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newLiveUpstream(t, 0, func(u *liveUpstream) {
				u.read = func(r *bufio.Reader) (upstreamRequest, bool) {
					var req upstreamRequest
					for { // the head only
						l, err := r.ReadString('\n')
						if err != nil {
							return req, false
						}
						if req.method == "" {
							req.method, _, _ = strings.Cut(l, " ")
						}
						if l == "\r\n" {
							return req, true
						}
					}
				}
				u.answer = func(c net.Conn, _ int64, req upstreamRequest) bool {
					if req.method != "POST" {
						_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						return err == nil
					}
					_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\n"+tc.close+"Content-Length: 8\r\n\r\ntoo long")
					// Closing with the body unread resets the connection.
					return false
				}
			})
			e := newEnvOpts(t, envOptions{appUpstream: u.URL()})
			if code, _ := call(t, e, "GET", "/public/warm", nil); code != 200 {
				t.Fatalf("warm-up GET = %d, want 200", code)
			}
			if code, body := call(t, e, "POST", "/public/upload", bytes.Repeat([]byte("x"), 8<<20)); code != 413 || body != "too long" {
				t.Errorf("POST = %d %.40q, want the upstream's 413", code, body)
			}
			if code, body := call(t, e, "GET", "/public/next", nil); code != 200 || body != "ok" {
				t.Errorf("next GET = %d %q, want 200 ok", code, body)
			}
			if n := u.served.Load(); n != 3 {
				t.Errorf("the upstream read %d requests, want 3 (the POST once)", n)
			}
		})
	}
}
