package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoBorrowedIdentity interleaves the valid tokens and cookies of
// several users with forgeries of the same length and mutated copies, on
// one keep-alive connection, so that every request lands in the buffers the
// one before it used. Every forgery must get 401 and every valid credential
// its own identity. It is the test for the bug where the verified-token
// cache kept a key that still pointed into fasthttp's reused request buffer,
// and a random string was served as the last user who called.
func TestNoBorrowedIdentity(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	type cred struct {
		user, openid string
		header       string // the request line that carries it
	}
	var valid []cred
	for _, u := range []string{"alice", "bob", "carol"} {
		pair := a.mpLogin(u)
		mu, _ := e.sim.User(mpID, u)
		valid = append(valid, cred{u, mu.OpenID, "Authorization: Bearer " + pair["access_token"].(string)})
	}
	for _, u := range []string{"dave", "erin"} {
		b := e.browser(weChatUA)
		b.login("/", u)
		valid = append(valid, cred{u, e.user(u).OpenID, "Cookie: wxgate_session=" + b.cookie("wxgate_session")})
	}

	forgeries := 10000
	if testing.Short() {
		forgeries = 1000
	}
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 8))
	t.Logf("seed %d", seed)
	host := strings.TrimPrefix(e.url, "http://")
	request := func(path, credLine string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: application/json\r\n" + credLine + "\r\n\r\n"
	}
	// openidOf reads the identity an answer carries: /_wxgate/userinfo's
	// JSON, or the upstream's echo of its headers.
	openidOf := func(path, body string) string {
		if strings.HasPrefix(path, "/_wxgate/") {
			var m map[string]any
			_ = json.Unmarshal([]byte(body), &m)
			s, _ := m["openid"].(string)
			return s
		}
		var got echo
		_ = json.Unmarshal([]byte(body), &got)
		return first(got.Headers["X-Wechat-Openid"])
	}
	paths := []string{"/_wxgate/userinfo", "/api/orders"}

	rc := e.dial()
	accepted, wrong := 0, 0
	for i := 0; i < forgeries; i++ {
		v := valid[rng.IntN(len(valid))]
		path := paths[rng.IntN(len(paths))]
		resp, body := rc.send(request(path, v.header))
		if resp == nil {
			t.Fatalf("request %d: the gateway closed the connection", i)
		}
		if got := openidOf(path, body); resp.StatusCode != http.StatusOK || got != v.openid {
			wrong++
			if wrong <= 5 {
				t.Errorf("%s's valid credential on %s: %d, openid %q; want 200 %q", v.user, path, resp.StatusCode, got, v.openid)
			}
		}
		forged := forge(rng, v.header)
		resp, body = rc.send(request(path, forged))
		if resp == nil {
			t.Fatalf("forgery %d: the gateway closed the connection", i)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			accepted++
			if accepted <= 5 {
				t.Errorf("forgery %q on %s: %d (openid %q), want 401", forged, path, resp.StatusCode, openidOf(path, body))
			}
		}
	}
	if accepted > 0 || wrong > 0 {
		t.Fatalf("%d of %d forgeries accepted; %d valid credentials answered wrongly", accepted, forgeries, wrong)
	}
}

// forge turns a credential header line into a forgery of the same length:
// a random string in the credential's alphabet, a JWT with a random body
// and signature, or the original with one character changed.
func forge(rng *rand.Rand, line string) string {
	name, value, _ := strings.Cut(line, ": ")
	prefix := ""
	if p, v, ok := strings.Cut(value, " "); ok { // "Bearer <token>"
		prefix, value = p+" ", v
	} else if p, v, ok := strings.Cut(value, "="); ok { // "wxgate_session=<id>"
		prefix, value = p+"=", v
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := []byte(value)
	switch rng.IntN(3) {
	case 0: // random, same length
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
	case 1: // same shape: keep the dots (and so the JWT header), randomize the rest
		header := strings.IndexByte(value, '.')
		for i := range b {
			if b[i] != '.' && i > header {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
	default: // one character changed, never the last of a base64 segment,
		// whose spare bits may decode to the same bytes
		for {
			i := rng.IntN(len(b) - 1)
			if b[i] == '.' || b[i+1] == '.' {
				continue
			}
			c := alphabet[rng.IntN(len(alphabet))]
			if c != b[i] {
				b[i] = c
				break
			}
		}
	}
	return fmt.Sprintf("%s: %s%s", name, prefix, b)
}

// securityCase is one entry of the corpus in testdata/security: raw bytes
// sent on a fresh connection, and what must happen.
type securityCase struct {
	Name string `json:"name"`
	// Why says what the case attacks.
	Why string `json:"why"`
	// Request is sent as is, after its placeholders ({host},
	// {alice_cookie}, {alice_token}, ...) are filled in. It may hold more
	// than one request (pipelining, smuggling).
	Request string `json:"request"`
	// Status is the status of the first answer.
	Status int `json:"status"`
	// Close: the gateway must close the connection after that answer
	// (nothing after a framing error may be read as a request).
	Close bool `json:"close"`
	// HalfClose: close the sending side after the request, as a client
	// that stops in the middle of a body does.
	HalfClose bool `json:"half_close"`
	// Location, if set, is the exact Location of the answer;
	// LocationContains a part of it.
	Location         string `json:"location"`
	LocationContains string `json:"location_contains"`
	// Upstream is what the upstream may see; absent, it must see nothing.
	Upstream *upstreamWant `json:"upstream"`
}

// upstreamWant is what one request reaching the upstream must look like.
type upstreamWant struct {
	// Target is the exact request-target.
	Target string `json:"target"`
	// Headers must be present with these values (names folded as lenient
	// servers fold them).
	Headers map[string]string `json:"headers"`
	// Absent headers must not be present in any spelling.
	Absent []string `json:"absent"`
	// NotContain are byte strings that must not appear in the request.
	NotContain []string `json:"not_contain"`
}

// TestSecurityCorpus drives the gateway with raw bytes from
// testdata/security/*.json and checks the answer and the exact bytes a
// raw upstream received.
func TestSecurityCorpus(t *testing.T) {
	up := newRawUpstream(t)
	e := newEnvOpts(t, envOptions{appUpstream: up.URL()})
	b := e.browser(weChatUA)
	callback := b.authorize(b.expectRedirect(b.expectRedirect("/")), "alice", "allow")
	b.expectRedirect(callback)
	pair := e.api().mpLogin("alice")
	alice := e.user("alice")
	aliceMP, _ := e.sim.User(mpID, "alice")
	// An attacker's login, stopped at the callback: the state and code a
	// login CSRF would plant in a victim's browser.
	attacker := e.browser(weChatUA)
	cb, err := url.Parse(attacker.authorize(attacker.expectRedirect(attacker.expectRedirect("/")), "mallory", "allow"))
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(e.url, "http://")
	token := pair["access_token"].(string)
	fill := strings.NewReplacer(
		"{host}", host,
		"{port}", host[strings.LastIndexByte(host, ':')+1:],
		"{alice_cookie}", b.cookie("wxgate_session"),
		"{alice_token}", token,
		"{alice_token_cut}", token[:len(token)-1],
		"{alice_openid}", alice.OpenID,
		"{alice_mp_openid}", aliceMP.OpenID,
		"{alice_callback}", strings.TrimPrefix(callback, e.url),
		"{attacker_state}", cb.Query().Get("state"),
		"{attacker_code}", cb.Query().Get("code"),
	)
	files, err := filepath.Glob("testdata/security/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cases []securityCase
		if err := json.Unmarshal(raw, &cases); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		group := strings.TrimSuffix(filepath.Base(file), ".json")
		for _, tc := range cases {
			t.Run(group+"/"+tc.Name, func(t *testing.T) {
				up.reset()
				rc := e.dial()
				req := fill.Replace(tc.Request)
				if head, body, ok := strings.Cut(req, "\r\n\r\n"); ok {
					req = strings.Replace(head, "{content_length}", strconv.Itoa(len(body)), 1) + "\r\n\r\n" + body
				}
				send := rc.send
				if tc.HalfClose {
					send = rc.sendHalfClosed
				}
				resp, body := send(req)
				if resp == nil {
					t.Fatalf("no answer to %q", req)
				}
				if resp.StatusCode != tc.Status {
					t.Errorf("status %d, want %d (%s); body %.200q", resp.StatusCode, tc.Status, tc.Why, body)
				}
				if tc.Location != "" {
					if got := resp.Header.Get("Location"); got != fill.Replace(tc.Location) {
						t.Errorf("Location %q, want %q", got, fill.Replace(tc.Location))
					}
				}
				if tc.LocationContains != "" && !strings.Contains(resp.Header.Get("Location"), tc.LocationContains) {
					t.Errorf("Location %q, want it to contain %q", resp.Header.Get("Location"), tc.LocationContains)
				}
				if tc.Close && !rc.closed() {
					t.Errorf("the connection stayed open after the answer (%s)", tc.Why)
				}
				checkUpstream(t, up.requests(), tc.Upstream, fill)
			})
		}
	}
}

func checkUpstream(t *testing.T, got []upstreamRequest, want *upstreamWant, fill *strings.Replacer) {
	t.Helper()
	if want == nil {
		for _, r := range got {
			t.Errorf("the upstream received %q; it must receive nothing", r.raw)
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("the upstream received %d requests, want 1: %q", len(got), got)
	}
	r := got[0]
	if want.Target != "" && r.target != fill.Replace(want.Target) {
		t.Errorf("upstream target %q, want %q", r.target, fill.Replace(want.Target))
	}
	for name, v := range want.Headers {
		if vals := r.header(name); len(vals) != 1 || vals[0] != fill.Replace(v) {
			t.Errorf("upstream %s = %q, want [%q]", name, vals, fill.Replace(v))
		}
	}
	for _, name := range want.Absent {
		if vals := r.header(name); len(vals) > 0 {
			t.Errorf("upstream received %s: %q", name, vals)
		}
	}
	for _, s := range want.NotContain {
		if bytes.Contains(r.raw, []byte(fill.Replace(s))) {
			t.Errorf("upstream request contains %q:\n%s", s, r.raw)
		}
	}
}

// TestStartFloodIsBounded floods /start from one address: beyond its
// bound it gets 429 pages (counted in metrics) and stores nothing, and a
// browser on another address still logs in.
func TestStartFloodIsBounded(t *testing.T) {
	e := newEnvOpts(t, envOptions{maxPending: 1000, maxPendingPerClient: 20})
	flood := e.browser(weChatUA)
	admitted, refused := 0, 0
	for i := 0; i < 200; i++ {
		resp, body := flood.get("/_wxgate/start?rd=/orders/"+strconv.Itoa(i), nil)
		switch resp.StatusCode {
		case http.StatusFound:
			admitted++
		case http.StatusTooManyRequests:
			refused++
			if i == 199 && (!strings.Contains(body, "登录请求过多") || resp.Header.Get("Retry-After") != "60") {
				t.Errorf("429 answer: Retry-After %q, body %.300s", resp.Header.Get("Retry-After"), body)
			}
		default:
			t.Fatalf("start %d: %d %.200s", i, resp.StatusCode, body)
		}
	}
	if admitted != 20 || refused != 180 {
		t.Errorf("from one address: %d starts admitted and %d refused, want 20 and 180", admitted, refused)
	}
	// Another client, on another address, logs in all the way.
	other := e.browserFrom(weChatUA, "127.0.0.2")
	if got := other.login("/orders/7", "bob"); got != e.url+"/orders/7" {
		t.Errorf("another client's login lands on %q", got)
	}
	if got := other.upstreamView("/orders/7", nil); first(got.Headers["X-Wechat-Openid"]) != e.user("bob").OpenID {
		t.Errorf("another client's login: upstream identity %v", got.Headers)
	}
	metrics := e.scrape()
	if !strings.Contains(metrics, `wxgate_login_starts_refused_total{reason="client"} 180`) {
		t.Errorf("/metrics lacks the 180 refused starts:\n%s", grepLines(metrics, "refused"))
	}
}

// TestAdminAnswersOnlyItsHosts: a page that rebinds its own name to the
// admin listener's address gets 403 for every admin endpoint; IP literals
// and localhost are answered.
func TestAdminAnswersOnlyItsHosts(t *testing.T) {
	e := newEnv(t)
	port := e.adminURL[strings.LastIndexByte(e.adminURL, ':')+1:]
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:" + port, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"LOCALHOST.:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"rebind.attacker.example:" + port, http.StatusForbidden},
		{"rebind.attacker.example", http.StatusForbidden},
		{"localhost.attacker.example:" + port, http.StatusForbidden},
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/app-token?appid=" + oaID, "/sessions?openid=x"} {
		for _, tc := range tests {
			req, _ := http.NewRequest(http.MethodGet, e.adminURL+path, nil)
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if tc.want == http.StatusForbidden && resp.StatusCode != tc.want || tc.want == http.StatusOK && resp.StatusCode == http.StatusForbidden {
				t.Errorf("GET %s with Host %s: %d, want %d", path, tc.host, resp.StatusCode, tc.want)
			}
		}
	}
}
