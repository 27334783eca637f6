package proxy_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wxgate/wxgate/session"
)

// api is a JSON client of the gateway, as a mini program or app would be.
type api struct {
	e *env
	c *http.Client
}

func (e *env) api() *api { return &api{e: e, c: &http.Client{Timeout: 10 * time.Second}} }

// post sends JSON (a string is sent raw) and decodes the JSON answer.
func (a *api) post(path string, body any, bearer string) (int, map[string]any, http.Header) {
	a.e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	req, _ := http.NewRequest(http.MethodPost, a.e.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return a.do(req)
}

func (a *api) get(path, bearer string) (int, map[string]any, http.Header) {
	a.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.e.url+path, nil)
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return a.do(req)
}

func (a *api) do(req *http.Request) (int, map[string]any, http.Header) {
	a.e.t.Helper()
	resp, err := a.c.Do(req)
	if err != nil {
		a.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		a.e.t.Fatalf("%s %s: %d, not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m, resp.Header
}

// simPost calls a simulator hook.
func (e *env) simPost(path string, body any) map[string]any {
	e.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(e.simURL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		e.t.Fatalf("%s: %v", path, err)
	}
	return m
}

// mpLogin logs user in through the mini program and returns the pair.
func (a *api) mpLogin(user string) map[string]any {
	a.e.t.Helper()
	code := a.e.simPost("/_sim/code", map[string]string{"appid": mpID, "user": user})["code"]
	status, pair, _ := a.post("/_wxgate/miniprogram/login", map[string]any{"code": code}, "")
	if status != http.StatusOK {
		a.e.t.Fatalf("mini-program login: %d %v", status, pair)
	}
	return pair
}

// view fetches path with a bearer and returns what the upstream received.
func (a *api) view(path, bearer string) echo {
	a.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := a.c.Do(req)
	if err != nil {
		a.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echo
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
		a.e.t.Fatalf("GET %s with bearer: %d %v", path, resp.StatusCode, err)
	}
	return got
}

func TestMiniProgramLoginAndBearer(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("dora")
	dora, _ := e.sim.User(mpID, "dora")
	for k, want := range map[string]any{"token_type": "Bearer", "expires_in": 7200.0, "refresh_expires_in": 2592000.0, "openid": dora.OpenID, "unionid": dora.UnionID} {
		if pair[k] != want {
			t.Errorf("pair[%s] = %v, want %v", k, pair[k], want)
		}
	}
	if strings.Contains(mustJSON(pair), "session_key") {
		t.Error("the pair carries the session_key")
	}
	got := a.view("/api/orders", pair["access_token"].(string))
	if first(got.Headers["X-Wechat-Openid"]) != dora.OpenID || first(got.Headers["X-Wechat-Unionid"]) != dora.UnionID ||
		first(got.Headers["X-Wechat-Scope"]) != "miniprogram" || first(got.Headers["X-Wechat-Appid"]) != mpID {
		t.Errorf("upstream identity: %v", got.Headers)
	}
	if got.Headers["Authorization"] != nil {
		t.Error("the bearer token was forwarded to the upstream")
	}
	if first(got.Headers["X-Wechat-Identity"]) == "" {
		t.Error("no X-WeChat-Identity")
	}
	// The identity endpoint answers bearer callers too.
	if status, m, _ := a.get("/_wxgate/userinfo", pair["access_token"].(string)); status != 200 || m["openid"] != dora.OpenID {
		t.Errorf("userinfo with bearer: %d %v", status, m)
	}
	// A bad js_code is the user's: 400 invalid_grant, with the errcode.
	status, m, _ := a.post("/_wxgate/miniprogram/login", map[string]any{"code": "0123456789abcdef0123456789abcdef"}, "")
	if status != http.StatusBadRequest || m["error"] != "invalid_grant" || m["errcode"] != 40029.0 {
		t.Errorf("bad code: %d %v", status, m)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestBadRequestsAreClear(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	for _, body := range []string{"", "{", "[]", `{"code":1}`, `{"code":""}`, `{"code":"x","extra":1}`, `{"code":"a b"}`, `{"code":"x"} {}`, strings.Repeat("x", 70000)} {
		status, m, _ := a.post("/_wxgate/miniprogram/login", body, "")
		if status != http.StatusBadRequest || m["error"] != "invalid_request" {
			t.Errorf("login body %.30q: %d %v, want 400 invalid_request", body, status, m)
		}
	}
	for _, body := range []string{"", `{"refresh_token":""}`, `{"refresh_token":5}`} {
		if status, m, _ := a.post("/_wxgate/token/refresh", body, ""); status != 400 || m["error"] != "invalid_request" {
			t.Errorf("refresh body %q: %d %v", body, status, m)
		}
	}
	for _, tok := range []string{"garbage", strings.Repeat("A", 43), "../../x"} {
		if status, m, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": tok}, ""); status != 401 || m["error"] != "invalid_grant" {
			t.Errorf("refresh %q: %d %v, want 401 invalid_grant", tok, status, m)
		}
	}
}

func TestDecrypt(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("erin")
	bearer := pair["access_token"].(string)
	erin, _ := e.sim.User(mpID, "erin")

	enc := e.simPost("/_sim/encrypt", map[string]string{"appid": mpID, "user": "erin"})
	status, plain, _ := a.post("/_wxgate/miniprogram/decrypt", map[string]any{"encrypted_data": enc["encrypted_data"], "iv": enc["iv"]}, bearer)
	if status != 200 || plain["openId"] != erin.OpenID || plain["nickName"] != erin.Nickname {
		t.Fatalf("decrypt: %d %v", status, plain)
	}
	// The nickname now reaches the upstream.
	got := a.view("/api/x", bearer)
	if nick, _ := url.PathUnescape(first(got.Headers["X-Wechat-Nickname"])); nick != erin.Nickname {
		t.Errorf("upstream nickname after decrypt = %q, want %q", nick, erin.Nickname)
	}

	raw, _ := base64.StdEncoding.DecodeString(enc["encrypted_data"].(string))
	b64 := base64.StdEncoding.EncodeToString
	badPad := append([]byte{}, raw...)
	badPad[len(badPad)-1] ^= 0x55
	foreign := e.simPost("/_sim/encrypt", map[string]any{"appid": mpID, "user": "erin", "data": map[string]any{"watermark": map[string]any{"appid": "wxSOMEONEELSE"}}})
	for name, body := range map[string]map[string]any{
		"truncated":         {"encrypted_data": b64(raw[:len(raw)-16]), "iv": enc["iv"]},
		"misaligned":        {"encrypted_data": b64(raw[:len(raw)-5]), "iv": enc["iv"]},
		"wrong padding":     {"encrypted_data": b64(badPad), "iv": enc["iv"]},
		"foreign watermark": {"encrypted_data": foreign["encrypted_data"], "iv": foreign["iv"]},
		"bad iv":            {"encrypted_data": enc["encrypted_data"], "iv": "AAAA"},
		"not base64":        {"encrypted_data": "!!!", "iv": enc["iv"]},
		"empty":             {"encrypted_data": "", "iv": ""},
	} {
		status, m, _ := a.post("/_wxgate/miniprogram/decrypt", body, bearer)
		if status != http.StatusBadRequest || m["error"] != "invalid_request" {
			t.Errorf("%s: %d %v, want 400 invalid_request", name, status, m)
		}
	}
	// A newer login replaces the session_key: data for the old key fails.
	a.mpLogin("erin")
	if status, _, _ := a.post("/_wxgate/miniprogram/decrypt", map[string]any{"encrypted_data": enc["encrypted_data"], "iv": enc["iv"]}, bearer); status != 400 {
		t.Errorf("data for a replaced session_key: %d, want 400", status)
	}
	if status, m, h := a.post("/_wxgate/miniprogram/decrypt", map[string]any{"encrypted_data": "x", "iv": "y"}, ""); status != 401 || m["error"] != "invalid_token" || !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("decrypt without bearer: %d %v %q", status, m, h.Get("WWW-Authenticate"))
	}
}

func TestPhone(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("fay")
	bearer := pair["access_token"].(string)
	code := e.simPost("/_sim/phonecode", map[string]string{"appid": mpID, "user": "fay", "phone": "13800138000"})["code"]
	status, m, _ := a.post("/_wxgate/miniprogram/phone", map[string]any{"code": code}, bearer)
	if status != 200 || m["pure_phone_number"] != "13800138000" || m["country_code"] != "86" {
		t.Fatalf("phone: %d %v", status, m)
	}
	if got := a.view("/phone/x", bearer); first(got.Headers["X-Wechat-Phone"]) != "13800138000" {
		t.Errorf("pass_phone route: X-WeChat-Phone = %q", got.Headers["X-Wechat-Phone"])
	}
	if got := a.view("/api/x", bearer); got.Headers["X-Wechat-Phone"] != nil {
		t.Error("the phone reached a route without pass_phone")
	}
	// An app token WeChat rejects is dropped and fetched again, once.
	before := e.sim.Calls()["/cgi-bin/stable_token"]
	e.sim.ExpireAppTokens(mpID)
	code = e.simPost("/_sim/phonecode", map[string]string{"appid": mpID, "user": "fay", "phone": "13900139000"})["code"]
	if status, m, _ := a.post("/_wxgate/miniprogram/phone", map[string]any{"code": code}, bearer); status != 200 || m["pure_phone_number"] != "13900139000" {
		t.Errorf("phone after the app token expired: %d %v", status, m)
	}
	if n := e.sim.Calls()["/cgi-bin/stable_token"] - before; n != 1 {
		t.Errorf("stable_token calls after the rejection = %d, want 1", n)
	}
}

func TestAppLogin(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	code := e.simPost("/_sim/code", map[string]string{"appid": appID, "user": "gus"})["code"]
	status, pair, _ := a.post("/_wxgate/app/login", map[string]any{"code": code}, "")
	gus, _ := e.sim.User(appID, "gus")
	if status != 200 || pair["openid"] != gus.OpenID || pair["unionid"] != gus.UnionID {
		t.Fatalf("app login: %d %v", status, pair)
	}
	if rt, _ := pair["refresh_token"].(string); len(rt) != 43 {
		t.Errorf("refresh token %q, want 256 bits base64url", rt)
	}
	got := a.view("/profile/x", pair["access_token"].(string)) // app logins carry userinfo
	if first(got.Headers["X-Wechat-Openid"]) != gus.OpenID || first(got.Headers["X-Wechat-Scope"]) != "app" {
		t.Errorf("upstream: %v", got.Headers)
	}
	if nick, _ := url.PathUnescape(first(got.Headers["X-Wechat-Nickname"])); nick != gus.Nickname {
		t.Errorf("nickname = %q", nick)
	}
	// The same code again: WeChat's 40163, the user's error (400 invalid_grant), not a second login.
	if status, m, _ := a.post("/_wxgate/app/login", map[string]any{"code": code}, ""); status != http.StatusBadRequest || m["error"] != "invalid_grant" || m["errcode"] != 40163.0 {
		t.Errorf("reused app code: %d %v", status, m)
	}
}

func TestRefreshOverHTTP(t *testing.T) {
	e := newEnvOpts(t, envOptions{reuseGrace: "1ns"})
	a := e.api()
	p1 := a.mpLogin("hal")
	status, p2, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": p1["refresh_token"]}, "")
	if status != 200 || p2["refresh_token"] == p1["refresh_token"] {
		t.Fatalf("refresh: %d %v", status, p2)
	}
	a.view("/api/x", p2["access_token"].(string))
	// The rotated-out token again: invalid_grant, and the family dies.
	if status, m, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": p1["refresh_token"]}, ""); status != 401 || m["error"] != "invalid_grant" {
		t.Errorf("reuse: %d %v", status, m)
	}
	if status, m, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": p2["refresh_token"]}, ""); status != 401 || m["error"] != "invalid_grant" {
		t.Errorf("current token after reuse: %d %v", status, m)
	}
	if status, m, _ := a.get("/api/x", p2["access_token"].(string)); status != 401 || m["error"] != "invalid_token" {
		t.Errorf("access token after reuse: %d %v", status, m)
	}
	// Revoke ends a family; unknown tokens get the same answer.
	p3 := a.mpLogin("hal")
	if status, _, _ := a.post("/_wxgate/token/revoke", map[string]any{"refresh_token": p3["refresh_token"]}, ""); status != 200 {
		t.Errorf("revoke: %d", status)
	}
	if status, _, _ := a.post("/_wxgate/token/revoke", map[string]any{"refresh_token": "unknown"}, ""); status != 200 {
		t.Errorf("revoke unknown: %d", status)
	}
	if status, m, _ := a.get("/api/x", p3["access_token"].(string)); status != 401 || m["error"] != "invalid_token" {
		t.Errorf("access token after revoke: %d %v", status, m)
	}
}

func TestConcurrentRefreshOverHTTP(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	p := a.mpLogin("ivy")
	var mu sync.Mutex
	codes := map[int]int{}
	var winner map[string]any
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, m, _ := a.post("/_wxgate/token/refresh", map[string]any{"refresh_token": p["refresh_token"]}, "")
			mu.Lock()
			defer mu.Unlock()
			codes[status]++
			if status == 200 {
				winner = m
			} else if m["error"] != "invalid_grant" {
				t.Errorf("loser: %d %v", status, m)
			}
		}()
	}
	wg.Wait()
	if codes[200] != 1 || codes[401] != 49 {
		t.Fatalf("50 concurrent refreshes: %v, want 1x200 and 49x401", codes)
	}
	a.view("/api/x", winner["access_token"].(string))
}

func TestBearerFailures(t *testing.T) {
	e := newEnv(t)
	a := e.api()
	pair := a.mpLogin("jo")
	good := pair["access_token"].(string)

	keyPEM, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := session.ParseKeys(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	_ = json.Unmarshal(ks.JWKS(), &set)
	kid := set.Keys[0]["kid"].(string)
	parts := strings.Split(good, ".")

	// Tokens signed with the real key but wrong claims.
	priv, _ := pemPrivate(t, keyPEM, kid)
	signed := func(iss, aud string) string {
		tok, _ := jwt.NewBuilder().Issuer(iss).Audience([]string{aud}).Subject("x").
			Expiration(time.Now().Add(time.Hour)).JwtID("j").Claim("sid", "none").Build()
		b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, priv))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	hs256 := func(key []byte) string {
		h, _ := json.Marshal(map[string]any{"alg": "HS256", "kid": kid, "typ": "JWT"})
		signing := base64.RawURLEncoding.EncodeToString(h) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	none, _ := json.Marshal(map[string]any{"alg": "none", "kid": kid})
	other, _ := session.GenerateKey(session.ES256)
	otherPriv, _ := pemPrivate(t, other, "")
	foreignTok, _ := jwt.NewBuilder().Issuer(e.url).Audience([]string{e.url}).Subject("x").Expiration(time.Now().Add(time.Hour)).JwtID("j").Claim("sid", "x").Build()
	foreign, _ := jwt.Sign(foreignTok, jwt.WithKey(jwa.ES256, otherPriv))

	tests := map[string]string{
		"alg none":              base64.RawURLEncoding.EncodeToString(none) + "." + parts[1] + ".",
		"HS256 with public JWK": hs256(mustMarshal(set.Keys[0])),
		"HS256 with JWKS":       hs256(ks.JWKS()),
		"wrong aud":             signed(e.url, "someone-else"),
		"wrong iss":             signed("https://evil.example", e.url),
		"unknown key":           string(foreign),
		"garbage":               "abc",
	}
	for name, tok := range tests {
		status, m, h := a.get("/api/x", tok)
		if status != 401 || m["error"] != "invalid_token" || !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %v %q, want 401 invalid_token", name, status, m, h.Get("WWW-Authenticate"))
		}
	}
	// A bad bearer on a public route: forwarded without identity.
	got := a.view("/public/x", "abc")
	if got.Headers["X-Wechat-Openid"] != nil {
		t.Error("an invalid bearer produced an identity")
	}
	// Expiry is told apart so a client refreshes exactly when it should.
	e.advance(2*time.Hour + time.Minute)
	if status, m, _ := a.get("/api/x", good); status != 401 || m["error"] != "token_expired" {
		t.Errorf("expired: %d %v, want 401 token_expired", status, m)
	}
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// pemPrivate returns the first PEM key as a jwk.Key with kid set.
func pemPrivate(t *testing.T, pemKey []byte, kid string) (jwk.Key, error) {
	t.Helper()
	k, err := jwk.ParseKey(pemKey, jwk.WithPEM(true))
	if err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		_ = k.Set(jwk.KeyIDKey, kid)
	}
	return k, nil
}

// TestIdentityAssertion: a browser session's request carries a signed
// assertion the upstream verifies against /_wxgate/jwks.json, for its own
// name as audience; the same assertion serves consecutive requests.
func TestIdentityAssertion(t *testing.T) {
	e := newEnv(t)
	b := e.browser(weChatUA)
	b.login("/", "alice")
	alice := e.user("alice")
	keys, err := jwk.Fetch(t.Context(), e.url+"/_wxgate/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	first1 := first(b.upstreamView("/", nil).Headers["X-Wechat-Identity"])
	second := first(b.upstreamView("/", map[string]string{"X-WeChat-Identity": "forged"}).Headers["X-Wechat-Identity"])
	if first1 == "" || first1 != second {
		t.Errorf("assertions %q and %q: want one cached assertion, never the forged one", first1, second)
	}
	tok, err := jwt.ParseString(first1, jwt.WithKeySet(keys), jwt.WithIssuer(e.url), jwt.WithAudience("app"))
	if err != nil {
		t.Fatalf("upstream verification: %v", err)
	}
	openid, _ := tok.Get("openid")
	scope, _ := tok.Get("scope")
	if tok.Subject() != alice.UnionID || openid != alice.OpenID || scope != "snsapi_base" || tok.JwtID() == "" {
		t.Errorf("claims: sub %q openid %v scope %v", tok.Subject(), openid, scope)
	}
	if life := tok.Expiration().Sub(tok.IssuedAt()); life > 5*time.Minute {
		t.Errorf("assertion lives %s, want at most 5m", life)
	}
	if _, err := jwt.ParseString(first1, jwt.WithKeySet(keys), jwt.WithIssuer(e.url), jwt.WithAudience("billing")); err == nil {
		t.Error("the assertion verifies for another upstream's audience")
	}
	// An assertion is not an access token: the gateway refuses it as one.
	if status, m, _ := e.api().get("/api/x", first1); status != 401 || m["error"] != "invalid_token" {
		t.Errorf("assertion as bearer: %d %v", status, m)
	}
}
