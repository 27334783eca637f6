package main

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/gorilla/websocket"
)

// DemoUpstream is the app `wxgate dev` puts behind the gateway: it shows
// exactly the request it received, as a page or, for Accept:
// application/json, as {"method","uri","headers":{NAME: VALUE}}. A
// WebSocket to /ws/echo is greeted with the user wxgate named and echoes
// every message.
func DemoUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws/echo" && websocket.IsWebSocketUpgrade(r) {
			demoEcho(w, r)
			return
		}
		headers := map[string]string{}
		for k, v := range r.Header {
			headers[k] = strings.Join(v, ", ")
		}
		if r.Host != "" {
			headers["Host"] = r.Host
		}
		if strings.Contains(r.Header.Get("Accept"), "application/json") {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "headers": headers})
			return
		}
		names := make([]string, 0, len(headers))
		for k := range headers {
			names = append(names, k)
		}
		sort.Strings(names)
		type row struct{ Name, Value string }
		var identity, other []row
		for _, n := range names {
			rw := row{n, headers[n]}
			if strings.HasPrefix(n, "X-Wechat-") || n == "X-Forwarded-User" {
				identity = append(identity, rw)
			} else {
				other = append(other, rw)
			}
		}
		nick, _ := url.PathUnescape(r.Header.Get("X-Wechat-Nickname"))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = demoPage.Execute(w, map[string]any{
			"Method": r.Method, "URI": r.RequestURI, "Identity": identity, "Other": other,
			"User": r.Header.Get("X-Forwarded-User"), "Nickname": nick,
		})
	})
}

// demoUpgrader accepts any Origin: wxgate has checked the page's origin
// for a cookie login, and the demo holds nothing else.
var demoUpgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// demoEcho greets the WebSocket's user and echoes its messages until it
// closes.
func demoEcho(w http.ResponseWriter, r *http.Request) {
	conn, err := demoUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	user := r.Header.Get("X-Forwarded-User")
	if user == "" {
		user = "anonymous"
	}
	if conn.WriteMessage(websocket.TextMessage, []byte("hello, "+user)) != nil {
		return
	}
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil || conn.WriteMessage(kind, msg) != nil {
			return
		}
	}
}

var demoPage = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>wxgate demo upstream</title><style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td{border-bottom:1px solid #eee;padding:.3rem;vertical-align:top;word-break:break-all}
td:first-child{font-family:monospace;white-space:nowrap;width:14rem}nav a{margin-right:1rem;display:inline-block}code{word-break:break-all}
@media (max-width:40rem){td{display:block;width:auto}td:first-child{white-space:normal;border-bottom:0;padding-bottom:0;color:#666}}</style></head><body>
<h1>Demo upstream</h1>
<p>{{if .User}}Logged in as <b>{{if .Nickname}}{{.Nickname}}{{else}}{{.User}}{{end}}</b>.{{else}}No identity on this request.{{end}}
This page is the app behind wxgate; it shows the request it received: <code>{{.Method}} {{.URI}}</code></p>
<nav><a href="/">home (base scope)</a><a href="/profile/">profile (userinfo scope)</a><a href="/public/">public</a><a href="/api/me">api (JSON)</a><a href="/_wxgate/userinfo">/_wxgate/userinfo</a><a href="/_wxgate/logout">log out</a></nav>
<h2>Identity headers set by wxgate</h2>
<table>{{range .Identity}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>{{else}}<tr><td colspan="2">none</td></tr>{{end}}</table>
<h2>Other headers</h2>
<table>{{range .Other}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>{{end}}</table>
<h2>WebSocket</h2>
<p><button id="ws">Open /ws/echo</button> <code id="wsout"></code></p>
<script>
document.getElementById("ws").onclick = function () {
  var out = document.getElementById("wsout"), log = [];
  var s = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/echo");
  s.onopen = function () { s.send("echo me"); };
  s.onmessage = function (m) { log.push(m.data); out.textContent = log.join(" / "); if (log.length === 2) s.close(); };
  s.onerror = function () { out.textContent = "failed (see the network panel: 401 without a login)"; };
};
</script>
</body></html>`))
