package wechatsim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
)

func newSessionKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Server) jscode2session(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, e := s.checkApp(q.Get("appid"), q.Get("secret"), true)
	if e != 0 {
		return nil, e
	}
	if q.Get("js_code") == "" {
		return nil, 41008
	}
	if q.Get("grant_type") != "authorization_code" {
		return nil, 40002
	}
	if a.Type != MiniProgram {
		return nil, 40013
	}
	c, e := s.redeem(a.AppID, q.Get("js_code"), jsCode)
	if e != 0 {
		return nil, e
	}
	openID := s.openID(a.AppID, c.user)
	// A user has one valid session_key; a new wx.login replaces it.
	key := newSessionKey()
	s.sessionKeys[a.AppID+"|"+openID] = key
	out := map[string]any{"openid": openID, "session_key": key}
	if u := s.unionID(a, c.user); u != "" {
		out["unionid"] = u
	}
	return out, 0
}

// SessionKey returns the current session_key of a mini-program user.
func (s *Server) SessionKey(appID, user string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.sessionKeys[appID+"|"+s.openID(appID, user)]
	return k, ok
}

func (s *Server) checkSession(r *http.Request) (any, int) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	appID, e := s.appTokenOwner(q.Get("access_token"))
	if e != 0 {
		return nil, e
	}
	if q.Get("sig_method") != "hmac_sha256" {
		return nil, 87008
	}
	key, ok := s.sessionKeys[appID+"|"+q.Get("openid")]
	if !ok {
		return nil, 87007
	}
	// The HMAC key is the session_key string's bytes, not its decoding.
	m := hmac.New(sha256.New, []byte(key))
	want := hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(q.Get("signature"))) {
		return nil, 87009
	}
	return map[string]any{"errcode": 0, "errmsg": "ok"}, 0
}

func (s *Server) userPhoneNumber(r *http.Request) (any, int) {
	if r.Method != http.MethodPost {
		return nil, 43002
	}
	var body struct {
		Code   string `json:"code"`
		OpenID string `json:"openid"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, 40029
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	appID, e := s.appTokenOwner(r.URL.Query().Get("access_token"))
	if e != 0 {
		return nil, e
	}
	if body.Code == "" {
		return nil, 41008
	}
	c, ok := s.codes[body.Code]
	if ok && c.kind == phoneCode && c.appID != appID {
		return nil, 40013
	}
	c, e = s.redeem(appID, body.Code, phoneCode)
	if e != 0 {
		// Phone codes are single use; a second use is just invalid.
		return nil, 40029
	}
	if body.OpenID != "" && body.OpenID != s.openID(appID, c.user) {
		return nil, 40003
	}
	return map[string]any{
		"errcode": 0,
		"errmsg":  "ok",
		"phone_info": map[string]any{
			"phoneNumber":     "+86" + c.phone,
			"purePhoneNumber": c.phone,
			"countryCode":     "86",
			"watermark":       map[string]any{"timestamp": s.now().Unix(), "appid": appID},
		},
	}, 0
}
