package proxy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
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
