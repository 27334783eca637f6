package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// VerifyIdentity is what an upstream does with X-WeChat-Identity: check it
// against wxgate's published keys, for its own name as audience. keys comes
// from jwk.Fetch(ctx, "https://gateway/_wxgate/jwks.json") (cache it, e.g.
// with jwk.NewCache, rather than fetching per request).
func VerifyIdentity(r *http.Request, keys jwk.Set, gatewayURL, upstreamName string) (jwt.Token, error) {
	return jwt.ParseString(r.Header.Get("X-WeChat-Identity"),
		jwt.WithKeySet(keys), // algorithms are pinned to each key's "alg"
		jwt.WithIssuer(gatewayURL),
		jwt.WithAudience(upstreamName),
	)
}

// Example: an upstream behind wxgate verifies the signed identity of a
// mini-program user's request.
func Example_verifyIdentity() {
	sim := wechatsim.New(wechatsim.App{AppID: "wxExampleMP000001", Secret: "s", Type: wechatsim.MiniProgram, OpenPlatformID: "op"})
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()

	var gatewayURL string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys, err := jwk.Fetch(r.Context(), gatewayURL+"/_wxgate/jwks.json")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		tok, err := VerifyIdentity(r, keys, gatewayURL, "orders")
		if err != nil {
			http.Error(w, "bad identity: "+err.Error(), 401)
			return
		}
		openid, _ := tok.Get("openid")
		fmt.Fprintf(w, "verified: sub is unionid %v, openid matches %v", tok.Subject() == r.Header.Get("X-WeChat-UnionID"), openid == r.Header.Get("X-WeChat-OpenID"))
	}))
	defer upstream.Close()

	gw := startGateway(simSrv.URL, upstream.URL)
	defer gw.close()
	gatewayURL = gw.url

	code := simCode(simSrv.URL, "wxExampleMP000001", "alice")
	pair := postJSON(gw.url+"/_wxgate/miniprogram/login", `{"code":"`+code+`"}`)
	req, _ := http.NewRequest("GET", gw.url+"/orders/42", nil)
	req.Header.Set("Authorization", "Bearer "+pair["access_token"].(string))
	resp, _ := http.DefaultClient.Do(req)
	body := readAll(resp)
	fmt.Println(body)
	// Output: verified: sub is unionid true, openid matches true
}

type exampleGateway struct {
	*proxy.Server
	url string
	dir string
}

func (g exampleGateway) close() {
	_ = g.Shutdown(context.Background())
	_ = os.RemoveAll(g.dir)
}

// startGateway runs a gateway with a mini program and one upstream named
// "orders", on a free port.
func startGateway(simURL, upstreamURL string) exampleGateway {
	dir, _ := os.MkdirTemp("", "wxgate-example")
	ln, pub := listen()
	admin, _ := listen()
	conf := fmt.Sprintf(`
[server]
public_url = %q
admin_listen = "127.0.0.1:0"
log_level = "error"
[wechat]
api_base = %q
open_base = %q
[wechat.miniprogram]
appid = "wxExampleMP000001"
secret = "s"
[tokens]
signing_key_file = %q
[[upstream]]
name = "orders"
url = %q
[policy]
default = "login"
api = true
`, pub, simURL, simURL, filepath.Join(dir, "key.pem"), upstreamURL)
	path := filepath.Join(dir, "gateway.toml")
	_ = os.WriteFile(path, []byte(conf), 0o600)
	cfg, _, err := proxy.LoadConfig(path, nil)
	if err != nil {
		panic(err)
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		panic(err)
	}
	gw, err := proxy.New(cfg, proxy.Options{Logger: discardLogger()})
	if err != nil {
		panic(err)
	}
	go func() { _ = gw.Serve(ln, admin) }()
	return exampleGateway{gw, pub, dir}
}

func simCode(simURL, appid, user string) string {
	m := postJSON(simURL+"/_sim/code", `{"appid":"`+appid+`","user":"`+user+`"}`)
	return m["code"].(string)
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
