package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// Example runs a code exchange against the simulator, then shows a WeChat
// error as a typed errcode.
func Example() {
	sim := wechatsim.New(wechatsim.App{AppID: "wxExample0000001", Secret: "s", Type: wechatsim.OfficialAccount})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	client := wechat.New(wechat.Config{APIBase: srv.URL, OpenBase: srv.URL})
	app := wechat.App{AppID: "wxExample0000001", Secret: "s"}

	// What WeChat's browser does: open the authorize URL, come back with a code.
	auth := client.AuthorizeURL(app.AppID, "https://app.example.com/cb", "snsapi_base", "xyz")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// The fragment is never sent; the simulator's automation parameters go
	// in the query.
	resp, _ := noFollow.Get(strings.TrimSuffix(auth, "#wechat_redirect") + "&sim_user=alice&sim_decision=allow")
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")

	tok, _ := client.ExchangeCode(context.Background(), app, code)
	alice, _ := sim.User(app.AppID, "alice")
	fmt.Println("openid matches:", tok.OpenID == alice.OpenID, "scope:", tok.Scope)

	_, err := client.ExchangeCode(context.Background(), app, code)
	var we *wechat.Error
	fmt.Println("reused code:", errors.As(err, &we), we.Code)
	// Output:
	// openid matches: true scope: snsapi_base
	// reused code: true 40163
}
