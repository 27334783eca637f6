package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestDemoWebSocketEcho: the demo upstream greets a WebSocket on /ws/echo
// with the user wxgate named (anonymous without one) and echoes it.
func TestDemoWebSocketEcho(t *testing.T) {
	srv := httptest.NewServer(DemoUpstream())
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/echo"
	for user, greeting := range map[string]string{"": "hello, anonymous", "oAlice": "hello, oAlice"} {
		h := map[string][]string{}
		if user != "" {
			h["X-Forwarded-User"] = []string{user}
		}
		ws, _, err := websocket.DefaultDialer.Dial(url, h)
		if err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != greeting {
			t.Errorf("greeting %q, %v; want %q", msg, err, greeting)
		}
		for _, m := range []string{"one", "二"} {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != m {
				t.Errorf("echo of %q: %q, %v", m, msg, err)
			}
		}
		ws.Close()
	}
}
