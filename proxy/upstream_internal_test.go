package proxy

import (
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxgate/wxgate/metrics"
)

// tlsUpstream starts an https upstream serving h and returns an upstream
// for it that trusts its certificate, and a count of its connections.
func tlsUpstream(t *testing.T, h http.HandlerFunc) (*upstream, *httptest.Server, *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	up, err := newUpstream(Upstream{Name: "tls", URL: srv.URL, Timeout: 5 * time.Second, KeepAliveIdle: 4 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	up.tls.RootCAs = roots
	up.tls.ServerName = "example.com" // in httptest's certificate
	return up, srv, &conns
}

// get sends GET / through up's pool, as forward does, and reads the answer.
func get(t *testing.T, up *upstream) (int, string, error) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("https://" + up.hc.Addr + "/")
	err := up.hc.Do(req, resp)
	if err != nil {
		err = up.resend(req, resp, nil, 0, err)
	}
	if err == nil {
		err = readAnswer(resp, "rid")
	}
	if err != nil {
		return 0, "", err
	}
	if resp.BodyStream() == nil { // read whole
		return resp.StatusCode(), string(resp.Body()), nil
	}
	body, err := io.ReadAll(resp.BodyStream())
	return resp.StatusCode(), string(body), err
}

// TestUpstreamTLS: over https the connection is followed above TLS: reused
// while open, sent again after the upstream closed it, and an answer cut
// by a close_notify at a chunk boundary is an error, not an end of body.
func TestUpstreamTLS(t *testing.T) {
	cut := false
	up, srv, conns := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if cut {
			_, _ = io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // closes the connection, close_notify first
		}
		_, _ = io.WriteString(w, "ok")
	})
	for i := range 2 {
		if code, body, err := get(t, up); code != 200 || body != "ok" || err != nil {
			t.Fatalf("GET #%d = %d %q %v, want 200 ok", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests, want 1", n)
	}
	srv.CloseClientConnections()
	if code, body, err := get(t, up); code != 200 || body != "ok" || err != nil {
		t.Fatalf("GET after the upstream closed = %d %q %v, want 200 ok", code, body, err)
	}
	cut = true
	_, body, err := get(t, up)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut answer read as %q, %v; want io.ErrUnexpectedEOF", body, err)
	}
	if !strings.Contains(body, "hello") && body != "" {
		t.Errorf("cut answer body %q", body)
	}
}

func TestKeepAliveTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"timeout=5", 4 * time.Second, true},
		{"timeout=5, max=1000", 4 * time.Second, true},
		{"max=100, Timeout=75", 74 * time.Second, true},
		{"timeout=1", 500 * time.Millisecond, true},
		{"timeout=0", 0, true},
		{"timeout=", 0, false},
		{"timeout=5s", 0, false},
		{"max=5", 0, false},
		{"", 0, false},
	} {
		got, ok := keepAliveTimeout([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("keepAliveTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
