package proxy_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// A head fasthttp cannot parse makes an error that, by default, quotes the
// head it read: a client's Authorization and Cookie headers, an upstream's
// Set-Cookie; a request line it refuses is quoted with its query, which
// may carry a login code. The gateway logs the error's cause (at debug for a client's
// 400, at warn for an upstream's 502), so none of those may be in it.
func TestUnparsableHeadsKeepTheirSecretsOutOfTheLog(t *testing.T) {
	const (
		bearer   = "eyJhbGciOiJFUzI1NiJ9.bearer-secret-payload.signature"
		cookie   = "client-session-cookie-secret"
		upCookie = "upstream-app-session-secret"
		code     = "wechat-login-code-secret"
	)
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nSet-Cookie: app="+upCookie+"\r\nBad\x01Header: x\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	var log lockedBuffer
	e := newEnvOpts(t, envOptions{log: &log, logLevel: slog.LevelDebug, appUpstream: "http://" + up.Addr().String()})

	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"a client's malformed header", "GET /public/x HTTP/1.1\r\nHost: " + strings.TrimPrefix(e.url, "http://") +
			"\r\nAuthorization: Bearer " + bearer + "\r\nCookie: wxgate_session=" + cookie + "\r\nBad: a\x01b\r\n\r\n", 400},
		{"a control character in the request line", "GET /_wxgate/callback?code=" + code + "&state=s\x1b HTTP/1.1\r\nHost: " + strings.TrimPrefix(e.url, "http://") + "\r\n\r\n", 400},
		{"an upstream's malformed header", "GET /public/x HTTP/1.1\r\nHost: " + strings.TrimPrefix(e.url, "http://") +
			"\r\nConnection: close\r\n\r\n", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := e.dial().send(tc.raw)
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("got %v, want %d", resp, tc.status)
			}
		})
	}
	out := log.String()
	if !strings.Contains(out, "error when reading") {
		t.Fatalf("the parse errors were not logged at all:\n%s", out)
	}
	for _, s := range []string{bearer, cookie, upCookie, code} {
		if strings.Contains(out, s) {
			t.Errorf("the log holds %q:\n%s", s, out)
		}
	}
}

// TestUnparsableRequestsHaveAnAccessLine: a request whose head fasthttp
// refuses, or the edge, still gets its one access line (route "invalid")
// with its client and the request ID its answer carries: at info,
// malformed traffic was invisible, or showed no client.
func TestUnparsableRequestsHaveAnAccessLine(t *testing.T) {
	var log lockedBuffer
	e := newEnvOpts(t, envOptions{log: &log, logTOML: `format = "json"`})
	host := strings.TrimPrefix(e.url, "http://")
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"a control character in a header", "GET /public/x HTTP/1.1\r\nHost: " + host + "\r\nBad: a\x01b\r\n\r\n", 400},
		{"a header line without a colon", "GET /public/y HTTP/1.1\r\nHost: " + host + "\r\nno colon here\r\n\r\n", 400},
		{"headers beyond the read buffer", "GET /public/z HTTP/1.1\r\nHost: " + host + "\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431},
		// Parsed, then refused by the edge: the client must be there too.
		{"two Content-Length headers", "POST /public/a HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400},
		{"user info in the request target", "GET http://u:p@" + host + "/public/b HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 400},
		{"CONNECT", "CONNECT " + host + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := e.dial().send(tc.raw)
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("got %v, want %d", resp, tc.status)
			}
			rid := resp.Header.Get("X-Request-Id")
			if rid == "" {
				t.Fatal("the answer has no X-Request-Id")
			}
			var found bool
			for _, line := range strings.Split(log.String(), "\n") {
				var l struct {
					Msg, RequestID, Route, Client string
					Status                        int
				}
				if json.Unmarshal([]byte(line), &struct {
					Msg       *string `json:"msg"`
					RequestID *string `json:"request_id"`
					Route     *string `json:"route"`
					Client    *string `json:"client"`
					Status    *int    `json:"status"`
				}{&l.Msg, &l.RequestID, &l.Route, &l.Client, &l.Status}) != nil {
					continue
				}
				if l.Msg == "request" && l.RequestID == rid {
					found = l.Route == "invalid" && l.Status == tc.status && l.Client == "127.0.0.1"
					if !found {
						t.Errorf("access line %s", line)
					}
				}
			}
			if !found {
				t.Errorf("no access line for request %s:\n%s", rid, log.String())
			}
		})
	}
}

// TestForwardAuthRefusalsKeepQueriesOutOfTheLog: a forward-auth question
// whose original request wxgate refuses names that request in the logged
// cause by its path only: the query may carry a code or a token.
func TestForwardAuthRefusalsKeepQueriesOutOfTheLog(t *testing.T) {
	const secret = "token-in-the-query-secret"
	var log lockedBuffer
	e := newEnvOpts(t, envOptions{serverKeys: `trusted_proxies = ["127.0.0.1/32"]`, log: &log, logLevel: slog.LevelDebug})
	host := strings.TrimPrefix(e.url, "http://")
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
	}{
		{"a fragment", "/_wxgate/auth", map[string]string{"X-Forwarded-Uri": "/app?t=" + secret + "#x", "X-Forwarded-Host": host}},
		{"not a path", "/_wxgate/auth", map[string]string{"X-Forwarded-Uri": "app?t=" + secret, "X-Forwarded-Host": host}},
		{"not an absolute URL", "/_wxgate/auth", map[string]string{"X-Original-URL": "ftp://h/app?t=" + secret}},
		{"named twice", "/_wxgate/auth/app?t=" + secret, map[string]string{"X-Forwarded-Uri": "/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := e.browser("traefik").get(tc.path, tc.hdr)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
		})
	}
	out := log.String()
	if !strings.Contains(out, "request refused") {
		t.Fatalf("no refusal logged:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the log holds the query:\n%s", out)
	}
}
