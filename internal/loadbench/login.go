package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// weChatUA is the in-WeChat browser's User-Agent: the official-account
// flow.
const weChatUA = "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50"

// browserLogin runs the official-account login as user on the gateway at
// addr and returns the session cookie as a Cookie header value.
func browserLogin(addr, simURL, user string) (string, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	loc := "http://" + addr + "/home"
	for hop := 0; hop < 6; hop++ {
		if strings.HasPrefix(loc, simURL) {
			loc = strings.TrimSuffix(loc, "#wechat_redirect") + "&sim_user=" + user + "&sim_decision=allow"
		}
		req, _ := http.NewRequest(http.MethodGet, loc, nil)
		req.Header.Set("User-Agent", weChatUA)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			break
		}
		next, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			return "", err
		}
		loc = next.String()
	}
	u, _ := url.Parse("http://" + addr + "/")
	var parts []string
	for _, ck := range jar.Cookies(u) {
		if strings.Contains(ck.Name, "session") {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("no session cookie after the login (ended at %s)", loc)
	}
	return strings.Join(parts, "; "), nil
}

// appLogin logs user in through the mobile app's code exchange and
// returns the access token.
func appLogin(addr, simURL, user string) (string, error) {
	resp, err := http.Post(simURL+"/_sim/code", "application/json", strings.NewReader(fmt.Sprintf(`{"appid":%q,"user":%q}`, appID, user)))
	if err != nil {
		return "", err
	}
	var code struct{ Code string }
	err = json.NewDecoder(resp.Body).Decode(&code)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	resp, err = http.Post("http://"+addr+"/_wxgate/app/login", "application/json", strings.NewReader(fmt.Sprintf(`{"code":%q}`, code.Code)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pair); err != nil || pair.AccessToken == "" {
		return "", fmt.Errorf("app login: %d %v", resp.StatusCode, err)
	}
	return pair.AccessToken, nil
}

// loginRate runs whole browser logins from 8 browsers at once for d and
// returns how many completed per second.
func loginRate(addr, simURL string, d time.Duration) (float64, error) {
	var done atomic.Int64
	var first atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if _, err := browserLogin(addr, simURL, fmt.Sprintf("u%d-%d", w, i)); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return 0, err
	}
	return float64(done.Load()) / d.Seconds(), nil
}
