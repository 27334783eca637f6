package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestEventStreamIsNotBuffered reads the first server-sent event through
// the gateway while the upstream is still holding its answer open: an
// answer that waited for the upstream's end would never arrive.
func TestEventStreamIsNotBuffered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header func(http.Header)
	}{
		{"event-stream chunked", func(h http.Header) { h.Set("Content-Type", "text/event-stream") }},
		{"plain chunked", func(h http.Header) { h.Set("Content-Type", "text/plain") }},
		{"close-delimited", func(h http.Header) { h.Set("Content-Type", "text/event-stream"); h.Set("Connection", "close") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.header(w.Header())
				if tc.name == "close-delimited" {
					// Neither Content-Length nor chunked: the body ends with
					// the connection (HTTP/1.0 style).
					hj, _, _ := w.(http.Hijacker).Hijack()
					defer hj.Close()
					fmt.Fprint(hj, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: first\n\n")
					<-read
					fmt.Fprint(hj, "data: second\n\n")
					return
				}
				fmt.Fprint(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-read:
				case <-r.Context().Done():
					return
				}
				fmt.Fprint(w, "data: second\n\n")
			}))
			defer up.Close()
			e := newEnvOpts(t, envOptions{appUpstream: up.URL})
			b := e.browser(weChatUA)
			got := make(chan string, 1)
			var rest io.Reader
			go func() {
				req, _ := http.NewRequest(http.MethodGet, e.url+"/public/events", nil)
				req.Header.Set("Accept", "text/event-stream")
				resp, err := b.c.Do(req)
				if err != nil {
					got <- err.Error()
					return
				}
				if resp.StatusCode != http.StatusOK {
					resp.Body.Close()
					got <- fmt.Sprintf("status %d", resp.StatusCode)
					return
				}
				br := bufio.NewReader(resp.Body)
				t.Cleanup(func() { resp.Body.Close() })
				rest = br
				line, _ := br.ReadString('\n')
				got <- line
			}()
			select {
			case line := <-got:
				if line != "data: first\n" {
					close(read)
					t.Fatalf("first line %q, want the first event", line)
				}
			case <-time.After(5 * time.Second):
				close(read)
				t.Fatal("the first event did not arrive while the upstream held the answer open: buffered")
			}
			close(read)
			tail, err := io.ReadAll(rest)
			if err != nil || string(tail) != "\ndata: second\n\n" {
				t.Errorf("the rest of the stream: %q, %v; want the second event", tail, err)
			}
		})
	}
}

// TestUploadStreams: the upstream sees the first half of a body before the
// client has sent the second.
func TestUploadStreams(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			// 6 MB in all: over fiber's default BodyLimit (4 MB), which a
			// streamed body is not held to.
			const half = 3 << 20
			first := make(chan struct{})
			total := make(chan int64, 1)
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				buf := make([]byte, 32<<10)
				var n int64
				signalled := false
				for {
					m, err := r.Body.Read(buf)
					n += int64(m)
					if n > 0 && !signalled {
						signalled = true
						close(first)
					}
					if err != nil {
						break
					}
				}
				total <- n
				fmt.Fprint(w, n)
			}))
			defer up.Close()
			e := newEnvOpts(t, envOptions{appUpstream: up.URL})
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			part := strings.Repeat("x", half)
			if chunked {
				fmt.Fprintf(c, "POST /public/upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", half, part)
			} else {
				fmt.Fprintf(c, "POST /public/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s", 2*half, part)
			}
			select {
			case <-first:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream saw no byte of the body while the client held its second half: the body is buffered")
			}
			if chunked {
				fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", half, part)
			} else {
				fmt.Fprint(c, part)
			}
			if n := <-total; n != 2*half {
				t.Errorf("upstream received %d bytes, want %d", n, 2*half)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != fmt.Sprint(2*half) {
				t.Errorf("answer %d %q", resp.StatusCode, body)
			}
		})
	}
}
