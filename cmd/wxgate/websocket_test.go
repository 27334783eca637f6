package main

import (
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestServeWebSocketAtShutdown: after SIGTERM `wxgate serve` waits for an
// open WebSocket, which still carries messages; a second signal closes it
// at once, counted in a warning, and the exit is 0.
func TestServeWebSocketAtShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	up := httptest.NewServer(DemoUpstream())
	t.Cleanup(up.Close)
	g := startDrainGateway(t, up.URL, "0s", "1m")
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(g.public, "http")+"/ws/echo", nil)
	if err != nil {
		t.Fatalf("WebSocket through wxgate serve: %v", err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	echo := func(m string) error {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			return err
		}
		_, got, err := ws.ReadMessage()
		if err == nil && string(got) != m {
			t.Errorf("echo of %q: %q", m, got)
		}
		return err
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello, anonymous" {
		t.Fatalf("greeting %q, %v", msg, err)
	}
	g.signal(t, syscall.SIGTERM)
	if !pollUntil(10*time.Second, func() bool {
		return strings.Contains(g.stderr.String(), `"msg":"waiting for the WebSockets open to close","websockets":1`)
	}) {
		t.Fatalf("no log of the WebSocket waited for after SIGTERM\n%s", g.stderr)
	}
	if err := echo("still here"); err != nil {
		t.Errorf("the WebSocket during the shutdown: %v, want it open until shutdown_timeout", err)
	}
	select {
	case <-g.done:
		t.Fatalf("exited with a WebSocket open, before shutdown_timeout (1m)\n%s", g.stderr)
	default:
	}
	second := time.Now()
	g.signal(t, syscall.SIGTERM)
	g.exitWithin(t, second, 5*time.Second)
	if g.err != nil {
		t.Errorf("exit: %v, want 0\n%s", g.err, g.stderr)
	}
	if err := echo("gone"); err == nil {
		t.Error("the WebSocket still echoes after the process exited")
	}
	log := g.stderr.String()
	if !strings.Contains(log, `"level":"WARN","msg":"closed the WebSockets still open at the end of the shutdown","websockets":1`) {
		t.Errorf("no warning counting the WebSocket closed:\n%s", log)
	}
	if strings.Contains(log, `"level":"ERROR"`) {
		t.Errorf("errors logged:\n%s", log)
	}
}
