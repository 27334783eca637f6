package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// rawUpstream is an upstream that keeps the exact bytes of every request it
// receives, so tests can say what an upstream parsing those bytes would
// see. It reads one request per connection (a head, then the body framed
// by Content-Length or chunked encoding), answers 200 "ok" and closes.
type rawUpstream struct {
	ln net.Listener
	mu sync.Mutex
	// got are the complete requests received.
	got []upstreamRequest
}

// upstreamRequest is one request as it came off the wire.
type upstreamRequest struct {
	raw    []byte // head and body exactly as received
	method string
	target string // the request-target of the request line
	// headers in order, names as sent.
	headers [][2]string
	body    []byte
}

func newRawUpstream(t testing.TB) *rawUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *rawUpstream) URL() string { return "http://" + u.ln.Addr().String() }

// requests returns what arrived since the last reset.
func (u *rawUpstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.got...)
}

func (u *rawUpstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = nil
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	var raw bytes.Buffer
	r := bufio.NewReader(io.TeeReader(c, &raw))
	req, ok := readRawRequest(r)
	if !ok {
		return // an incomplete request: never recorded
	}
	req.raw = bytes.Clone(raw.Bytes()[:raw.Len()-r.Buffered()])
	u.mu.Lock()
	u.got = append(u.got, req)
	u.mu.Unlock()
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
}

// readRawRequest reads one request the plain way a simple upstream would:
// lines end at LF, headers split at the first colon.
func readRawRequest(r *bufio.Reader) (upstreamRequest, bool) {
	var req upstreamRequest
	line, err := r.ReadString('\n')
	if err != nil {
		return req, false
	}
	parts := strings.Fields(line)
	if len(parts) != 3 {
		return req, false
	}
	req.method, req.target = parts[0], parts[1]
	length, chunked := 0, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return req, false
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		req.headers = append(req.headers, [2]string{name, value})
		switch strings.ToLower(name) {
		case "content-length":
			length, _ = strconv.Atoi(value)
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	if chunked {
		for {
			size, err := r.ReadString('\n')
			if err != nil {
				return req, false
			}
			n, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(size, ";", 2)[0]), 16, 64)
			if err != nil {
				return req, false
			}
			if n == 0 {
				for { // trailers
					l, err := r.ReadString('\n')
					if err != nil {
						return req, false
					}
					if strings.TrimRight(l, "\r\n") == "" {
						return req, true
					}
				}
			}
			chunk := make([]byte, n+2)
			if _, err := io.ReadFull(r, chunk); err != nil {
				return req, false
			}
			req.body = append(req.body, chunk[:n]...)
		}
	}
	req.body = make([]byte, length)
	if _, err := io.ReadFull(r, req.body); err != nil {
		return req, false
	}
	return req, true
}

// header returns the values of the headers whose names fold to name the
// way lenient servers fold them: case-insensitively, "_" as "-".
func (r upstreamRequest) header(name string) []string {
	var vals []string
	for _, h := range r.headers {
		if foldName(h[0]) == foldName(name) {
			vals = append(vals, h[1])
		}
	}
	return vals
}

func foldName(s string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "_", "-"))
}
