package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServeLogsRedisAsJSON: with Redis unreachable, what go-redis itself
// has to say (failed dials) comes out as the gateway's JSON log lines, not
// as plain text among them.
func TestServeLogsRedisAsJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildWxgate(t)
	port := freePort(t)
	public := "http://127.0.0.1:" + port
	env := serveEnv(port, public,
		"WXGATE_SESSION_STORE=redis",
		"WXGATE_SESSION_SNAPSHOT_FILE=",
		"WXGATE_SESSION_ENCRYPTION_KEY_ENV=WXGATE_TEST_SESSION_KEY",
		"WXGATE_TEST_SESSION_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"WXGATE_SESSION_REDIS_ADDRS=127.0.0.1:"+freePort(t), // nothing listens
		"WXGATE_SESSION_REDIS_TIMEOUT=100ms",
	)
	p := startServe(t, bin, t.TempDir(), public, env)
	c := newClient(t, public)
	for i := 0; i < 3; i++ {
		// A login start stores a pending login: a Redis write.
		if resp, _ := c.do("GET", public+"/_wxgate/start?rd=/", nil, ""); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("login start with Redis down: %d, want 503", resp.StatusCode)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "dial") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(t)
	out := p.stderr.String()
	if !strings.Contains(out, "dial") {
		t.Fatalf("no failed dial logged:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("a log line is not JSON: %q", line)
		}
	}
}
