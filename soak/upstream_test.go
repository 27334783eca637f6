package soak

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is an app behind the gateway that misbehaves the way real ones
// do: it closes idle keep-alive connections after a second (Node's default
// is 5 s; shorter finds more), restarts (every connection closed at once,
// idle ones mid-reuse), cuts bodies and stalls on the paths that ask for it,
// and sends its own 5xx, marked so that they are told apart from the
// gateway's.
type upstream struct {
	addr     string
	srv      *http.Server
	restarts atomic.Int64
	cuts     atomic.Int64
	stalls   atomic.Int64
	served   atomic.Int64
}

// bigBody is larger than the gateway's streaming threshold (256 KiB), so
// that big and cut answers stream through it.
const bigBody = 640 << 10

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), IdleTimeout: time.Second, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(func() { _ = u.srv.Close() })
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.served.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	switch r.URL.Path {
	case "/api/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := []byte(strings.Repeat("b", 32<<10))
		for n := 0; n < bigBody; n += len(chunk) {
			_, _ = w.Write(chunk)
		}
	case "/api/cut":
		// Half a streamed body, then the connection dies: the client must
		// see a broken body, never a complete one.
		u.cuts.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write([]byte(strings.Repeat("c", bigBody/2)))
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	case "/api/stall":
		// Silent past the gateway's upstream timeout: a 504 the upstream
		// caused.
		u.stalls.Add(1)
		select {
		case <-time.After(4 * time.Second):
		case <-r.Context().Done():
		}
	case "/api/fail":
		w.Header().Set("X-Soak-Upstream", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		if r.URL.Path == "/api/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"user":   r.Header.Get("X-Forwarded-User"),
			"openid": r.Header.Get("X-WeChat-OpenID"),
		})
	}
}

// restart closes every idle connection at once and answers with
// "Connection: close" for a moment, as a rolling restart of an app does:
// the gateway's pooled connections die under it.
func (u *upstream) restart() {
	u.restarts.Add(1)
	u.srv.SetKeepAlivesEnabled(false) // closes the idle connections
	time.Sleep(200 * time.Millisecond)
	u.srv.SetKeepAlivesEnabled(true)
}
