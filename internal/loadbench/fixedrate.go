package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"
)

// fixedRate is an open-loop load: requests go out on a fixed schedule
// whatever the answers do, as with wrk2's -R, which Debian's wrk lacks.
// Request k (from 0) is due at start + k/rate and goes on connection
// k mod conns, one request at a time on each. Its latency runs from when
// it was due, not from when it was sent: a stall that holds back the
// requests queued behind it counts against each of them, where a closed
// loop like wrk's would send them late and time them from then
// (coordinated omission: the stall shows in one request, not in the p99).
// run (fixedrate_linux.go) drives it.
type fixedRate struct {
	addr     string
	request  []byte  // one whole HTTP/1.1 request, sent as is each time
	rate     float64 // requests per second over all connections
	conns    int
	duration time.Duration
	// grace is how long past duration a connection that fell behind may go
	// on sending what was due; what is still unanswered then counts as
	// missed.
	grace time.Duration
}

// fixedResult is one fixed-rate run of a row.
type fixedResult struct {
	target, achieved float64 // requests per second
	// p50, p99 and p999 are latencies in ms from each request's due time.
	p50, p99, p999 float64
	// lag99 is the p99 in ms of the generator's own lateness: from when a
	// request could have gone (due, and its connection free) to when it
	// went. Latency includes it; a large one means the harness, not the
	// row, was slow (on 2 shared cores, mostly waiting for a CPU).
	lag99 float64
	// genCPU is the generator's CPU time per request in µs: this whole
	// process's, which does nothing else meanwhile.
	genCPU float64
	// over is how long after the run's end the last answer came.
	over   time.Duration
	done   int // requests answered
	missed int // requests due but not answered by duration + grace
	non2xx int
}

// kept reports whether the row kept the rate: every request answered and
// at 99% of the target or more over the run.
func (r fixedResult) kept() bool {
	return r.missed == 0 && r.achieved >= 0.99*r.target
}

// due is when request k of a run at rate requests per second from start
// is to be sent.
func due(start time.Time, rate float64, k int) time.Time {
	return start.Add(time.Duration(float64(k) * float64(time.Second) / rate))
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the least value that p% of the values do not exceed. Zero if
// sorted is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps 99.9% of 1000 at rank 999, not 1000 (0.999*1000
	// is a hair above 999 in floating point).
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// connLog is what one connection saw.
type connLog struct {
	latency, lag []time.Duration
	last         time.Time // when its last answer came
	missed       int
	non2xx       int
}

// summarize merges the connections' logs of a run at rate that started
// at start and was to last d.
func summarize(rate float64, d time.Duration, start time.Time, logs []connLog) fixedResult {
	res := fixedResult{target: rate}
	var latency, lag []time.Duration
	last := start.Add(d)
	for _, l := range logs {
		latency = append(latency, l.latency...)
		lag = append(lag, l.lag...)
		res.missed += l.missed
		res.non2xx += l.non2xx
		if l.last.After(last) {
			last = l.last
		}
	}
	slices.Sort(latency)
	slices.Sort(lag)
	res.done = len(latency)
	res.achieved = float64(res.done) / last.Sub(start).Seconds()
	res.over = last.Sub(start.Add(d))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res.p50, res.p99, res.p999 = ms(percentile(latency, 50)), ms(percentile(latency, 99)), ms(percentile(latency, 99.9))
	res.lag99 = ms(percentile(lag, 99))
	return res
}

var (
	crlf     = []byte("\r\n")
	headEnd  = []byte("\r\n\r\n")
	http1    = []byte("HTTP/1.")
	errChunk = errors.New("a chunked answer (only Content-Length bodies are read)")
)

// answerLen reads the head of the HTTP/1.x answer at the start of b and
// returns the whole answer's length, head and body, and its status; a
// length of 0 means the head is not all in b yet. It reads only what the
// rows send, a body of Content-Length bytes (fasthttp always sets one),
// and makes an error of anything else rather than misread the stream.
func answerLen(b []byte) (n, status int, err error) {
	head := bytes.Index(b, headEnd)
	if head < 0 {
		return 0, 0, nil
	}
	first, fields, _ := bytes.Cut(b[:head], crlf)
	// "HTTP/1.1 200 OK"
	if len(first) < 12 || !bytes.HasPrefix(first, http1) || first[8] != ' ' {
		return 0, 0, fmt.Errorf("not an HTTP/1 status line: %q", first)
	}
	if status, err = strconv.Atoi(string(first[9:12])); err != nil {
		return 0, 0, fmt.Errorf("status line %q: %w", first, err)
	}
	length := -1
	for len(fields) > 0 {
		var line []byte
		line, fields, _ = bytes.Cut(fields, crlf)
		name, value, _ := bytes.Cut(line, []byte(":"))
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil || length < 0 {
				return 0, 0, fmt.Errorf("Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, 0, errChunk
		}
	}
	if length < 0 {
		return 0, 0, fmt.Errorf("a %d answer without Content-Length", status)
	}
	return head + len(headEnd) + length, status, nil
}

// fixedGrace is fixedRate.grace in the harness.
const fixedGrace = time.Second

// driveFixed runs r at rate for o.duration on o.conns connections.
func driveFixed(r *row, o options, rate float64) (fixedResult, error) {
	addr, req, err := r.request()
	if err != nil {
		return fixedResult{}, err
	}
	before, err := cpuTime(os.Getpid())
	if err != nil {
		return fixedResult{}, err
	}
	res, err := fixedRate{addr: addr, request: req, rate: rate, conns: o.conns, duration: o.duration, grace: fixedGrace}.run()
	if err != nil {
		return fixedResult{}, err
	}
	after, err := cpuTime(os.Getpid())
	if err != nil {
		return fixedResult{}, err
	}
	res.genCPU = float64((after - before).Microseconds()) / float64(max(res.done, 1))
	if res.non2xx > 0 {
		return fixedResult{}, fmt.Errorf("%d answers were not 2xx (the credentials or route are wrong)", res.non2xx)
	}
	return res, nil
}

// request is r's request as wrk sends it: GET with Host and r's headers.
func (r *row) request() (addr string, req []byte, err error) {
	u, err := url.Parse(r.url)
	if err != nil {
		return "", nil, err
	}
	req = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	for _, h := range r.headers {
		req = fmt.Appendf(req, "%s\r\n", h)
	}
	return u.Host, append(req, "\r\n"...), nil
}
