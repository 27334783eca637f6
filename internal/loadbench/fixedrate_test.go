package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(n int) []time.Duration {
		v := make([]time.Duration, n)
		for i := range v {
			v[i] = time.Duration(i+1) * time.Millisecond
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one", ms(1), 50, time.Millisecond},
		{"median of 1000", ms(1000), 50, 500 * time.Millisecond},
		{"p99 of 1000", ms(1000), 99, 990 * time.Millisecond},
		{"p99.9 of 1000", ms(1000), 99.9, 999 * time.Millisecond},
		{"p100 of 1000", ms(1000), 100, 1000 * time.Millisecond},
		// With fewer than 100 values the p99 is the largest: the one
		// stalled request of 10 shows.
		{"p99 of 10", ms(10), 99, 10 * time.Millisecond},
		{"p99.9 of 100", ms(100), 99.9, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%d values, %v) = %v, want %v", len(tc.sorted), tc.p, got, tc.want)
			}
		})
	}
}

func TestDue(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	for k, want := range map[int]time.Duration{0: 0, 1: 250 * time.Millisecond, 5: 1250 * time.Millisecond, 4000: 1000 * time.Second} {
		if got := due(start, 4, k).Sub(start); got != want {
			t.Errorf("due(start, 4/s, %d) = start+%v, want start+%v", k, got, want)
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	d := 10 * time.Second
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		name string
		logs []connLog
		want fixedResult
		kept bool
	}{
		{
			name: "on time",
			logs: []connLog{
				{latency: ms(1, 3), lag: ms(0, 0), last: start.Add(9 * time.Second)},
				{latency: ms(2, 4), lag: ms(1, 0), last: start.Add(9 * time.Second)},
			},
			// 4 answers over the 10 s the run was to last, not the 9 s
			// to the last answer.
			want: fixedResult{target: 0.4, achieved: 0.4, p50: 2, p99: 4, p999: 4, lag99: 1, done: 4},
			kept: true,
		},
		{
			name: "answers after the end",
			logs: []connLog{{latency: ms(1, 2, 3, 900), lag: ms(0, 0, 0, 0), last: start.Add(12500 * time.Millisecond)}},
			want: fixedResult{target: 0.4, achieved: 0.32, p50: 2, p99: 900, p999: 900, over: 2500 * time.Millisecond, done: 4},
		},
		{
			name: "missed and not 2xx",
			logs: []connLog{
				{latency: ms(1, 1, 1, 1), lag: ms(0, 0, 0, 0), last: start.Add(9 * time.Second), non2xx: 1},
				{missed: 3},
			},
			want: fixedResult{target: 0.4, achieved: 0.4, p50: 1, p99: 1, p999: 1, done: 4, missed: 3, non2xx: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := summarize(0.4, d, start, tc.logs)
			if got != tc.want {
				t.Errorf("summarize = %+v, want %+v", got, tc.want)
			}
			if got.kept() != tc.kept {
				t.Errorf("kept() = %t, want %t", got.kept(), tc.kept)
			}
		})
	}
}

func TestAnswerLen(t *testing.T) {
	t.Parallel()
	const ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"
	for _, tc := range []struct {
		name   string
		in     string
		n      int
		status int
		err    bool
	}{
		{name: "part of the head", in: "HTTP/1.1 200 OK\r\nContent-Len"},
		{name: "head, no body yet", in: ok, n: len(ok) + 5, status: 200},
		{name: "whole", in: ok + "hello", n: len(ok) + 5, status: 200},
		{name: "lower-case name", in: "HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n", n: 44, status: 404},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", err: true},
		{name: "no length", in: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", err: true},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", err: true},
		{name: "not HTTP", in: "SSH-2.0-OpenSSH_9.6\r\n\r\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, status, err := answerLen([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("answerLen(%q) error = %v, want error %t", tc.in, err, tc.err)
			}
			if err == nil && (n != tc.n || status != tc.status) {
				t.Errorf("answerLen(%q) = %d, %d, want %d, %d", tc.in, n, status, tc.n, tc.status)
			}
		})
	}
	if _, _, err := answerLen([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")); !errors.Is(err, errChunk) {
		t.Errorf("answerLen(chunked) = %v, want errChunk", err)
	}
}

func TestRowRequest(t *testing.T) {
	t.Parallel()
	r := &row{url: "http://127.0.0.1:4000/api/items?x=1", headers: []string{"Cookie: a=b", "Authorization: Bearer t"}}
	addr, req, err := r.request()
	if err != nil {
		t.Fatal(err)
	}
	want := "GET /api/items?x=1 HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nCookie: a=b\r\nAuthorization: Bearer t\r\n\r\n"
	if addr != "127.0.0.1:4000" || string(req) != want {
		t.Errorf("request() = %q, %q, want %q, %q", addr, req, "127.0.0.1:4000", want)
	}
}

// stallOn serves requests at once, except the stall-th (from 1), which it
// holds for d.
func stallOn(stall int64, d time.Duration) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == stall {
			time.Sleep(d)
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}

func load(t *testing.T, h http.Handler, f fixedRate) fixedResult {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the fixed-rate loop needs Linux")
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.addr = strings.TrimPrefix(srv.URL, "http://")
	f.request = []byte("GET / HTTP/1.1\r\nHost: " + f.addr + "\r\n\r\n")
	res, err := f.run()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestFixedRateCountsStalls: one 100 ms stall on a connection that sends
// every 5 ms holds back the 20 requests due behind it, and each counts
// from when it was due, so the stall reaches the p99. Timed from when
// they were sent (coordinated omission) one request of 200 would show it
// and the p99 would be a fraction of a millisecond.
func TestFixedRateCountsStalls(t *testing.T) {
	t.Parallel()
	res := load(t, stallOn(20, 100*time.Millisecond), fixedRate{rate: 200, conns: 1, duration: time.Second, grace: time.Second})
	if res.done != 200 || res.missed != 0 || res.non2xx != 0 {
		t.Fatalf("answered %d, missed %d, not 2xx %d; want 200, 0, 0", res.done, res.missed, res.non2xx)
	}
	// The 3 slowest of 200 are the stalled request and the two due
	// next: at least 90 ms each.
	if res.p99 < 90 {
		t.Errorf("p99 = %.2f ms, want >= 90 (the stall counted once only?)", res.p99)
	}
	if res.p50 >= 50 {
		t.Errorf("p50 = %.2f ms, want < 50 (the stall counted against every request?)", res.p50)
	}
}

// TestFixedRateFallsBehind: a server that needs 10 ms a request cannot
// keep 200 requests a second on one connection; the run says so and
// counts what it could not send.
func TestFixedRateFallsBehind(t *testing.T) {
	t.Parallel()
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		_, _ = w.Write([]byte("ok\n"))
	})
	res := load(t, slow, fixedRate{rate: 200, conns: 1, duration: 300 * time.Millisecond, grace: 200 * time.Millisecond})
	if res.kept() {
		t.Errorf("kept() = true, want false: %+v", res)
	}
	// 60 due; 500 ms at 10 ms each answers 50 at most.
	if res.missed < 10 || res.done+res.missed != 60 {
		t.Errorf("answered %d, missed %d; want at least 10 of 60 missed", res.done, res.missed)
	}
}
