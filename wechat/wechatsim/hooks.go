package wechatsim

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// Fault is an injected failure for the next Times calls of one endpoint
// (POST /_sim/fault).
type Fault struct {
	Path string `json:"path"`
	// Errcode, if not zero, is answered as a WeChat error (HTTP 200).
	Errcode int `json:"errcode"`
	// HTTPStatus, if not zero, is answered as that status with Body.
	HTTPStatus int `json:"http_status"`
	// Body, if set without HTTPStatus, is answered raw with HTTP 200 (a
	// non-JSON body, say).
	Body string `json:"body"`
	// DelayMS delays the answer; with nothing else set, the call then
	// proceeds normally.
	DelayMS int `json:"delay_ms"`
	// Times is how many calls the fault applies to. Default 1.
	Times int `json:"times"`
}

// InjectFault queues f for its endpoint.
func (s *Server) InjectFault(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[f.Path] = append(s.faults[f.Path], &f)
}

// takeFault consumes one use of the first fault queued for path.
// Callers hold s.mu.
func (s *Server) takeFault(path string) *Fault {
	q := s.faults[path]
	if len(q) == 0 {
		return nil
	}
	f := *q[0]
	q[0].Times--
	if q[0].Times <= 0 {
		s.faults[path] = q[1:]
	}
	return &f
}

// apply writes the fault's answer and reports whether it did; a pure delay
// lets the call proceed.
func (f *Fault) apply(w http.ResponseWriter, r *http.Request) bool {
	if f.DelayMS > 0 {
		t := time.NewTimer(time.Duration(f.DelayMS) * time.Millisecond)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	switch {
	case f.HTTPStatus != 0:
		w.WriteHeader(f.HTTPStatus)
		_, _ = io.WriteString(w, f.Body)
	case f.Body != "":
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, f.Body)
	case f.Errcode != 0:
		writeErr(w, f.Errcode)
	default:
		return false
	}
	return true
}

func decodeHook(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		http.Error(w, "POST required", http.StatusMethodNotAllowed)
		return false
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (s *Server) hookCode(w http.ResponseWriter, r *http.Request) {
	var req struct{ AppID, User, Scope string }
	if !decodeHook(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.apps[req.AppID]
	if !ok || req.User == "" {
		http.Error(w, "unknown appid or empty user", http.StatusBadRequest)
		return
	}
	c := &code{appID: a.AppID, user: req.User, scope: req.Scope, kind: oauthCode}
	ttl := oauthCodeTTL
	switch a.Type {
	case MiniProgram:
		c.kind, c.scope, ttl = jsCode, "", jsCodeTTL
	case MobileApp:
		if c.scope == "" {
			c.scope = "snsapi_userinfo" // what SendAuth asks for
		}
	case Website:
		c.scope, ttl = "snsapi_login", qrCodeTTL
	default:
		if c.scope == "" {
			c.scope = "snsapi_base"
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": s.issueCode(c, ttl, 32, alnum)})
}

func (s *Server) hookPhoneCode(w http.ResponseWriter, r *http.Request) {
	var req struct{ AppID, User, Phone string }
	if !decodeHook(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[req.AppID]; !ok || req.User == "" || req.Phone == "" {
		http.Error(w, "unknown appid, or empty user or phone", http.StatusBadRequest)
		return
	}
	c := &code{appID: req.AppID, user: req.User, kind: phoneCode, phone: req.Phone}
	writeJSON(w, http.StatusOK, map[string]string{"code": s.issueCode(c, phoneCodeTTL, 64, hexDigits)})
}

func (s *Server) hookFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decodeHook(w, r, &f) {
		return
	}
	if f.Path == "" {
		http.Error(w, "path required", http.StatusBadRequest)
		return
	}
	s.InjectFault(f)
	writeJSON(w, http.StatusOK, map[string]any{"queued": f.Path})
}

func (s *Server) hookClock(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req struct {
			AdvanceSeconds float64 `json:"advance_seconds"`
		}
		if !decodeHook(w, r, &req) {
			return
		}
		if req.AdvanceSeconds < 0 {
			http.Error(w, "the clock only moves forward", http.StatusBadRequest)
			return
		}
		s.Advance(time.Duration(req.AdvanceSeconds * float64(time.Second)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"now": s.Now().Unix()})
}

// hookLifetimes sets, in seconds, the lifetimes of tokens issued from now
// on (POST), and reports them.
func (s *Server) hookLifetimes(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req struct {
			SNSAccessToken float64 `json:"sns_access_token"`
			AppAccessToken float64 `json:"app_access_token"`
			RefreshToken   float64 `json:"refresh_token"`
		}
		if !decodeHook(w, r, &req) {
			return
		}
		if req.SNSAccessToken < 0 || req.AppAccessToken < 0 || req.RefreshToken < 0 {
			http.Error(w, "lifetimes are positive seconds", http.StatusBadRequest)
			return
		}
		sec := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
		s.SetLifetimes(Lifetimes{SNSAccessToken: sec(req.SNSAccessToken), AppAccessToken: sec(req.AppAccessToken), RefreshToken: sec(req.RefreshToken)})
	}
	s.mu.Lock()
	l := s.lifetimes
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"sns_access_token": l.SNSAccessToken.Seconds(),
		"app_access_token": l.AppAccessToken.Seconds(),
		"refresh_token":    l.RefreshToken.Seconds(),
	})
}

func (s *Server) hookStats(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		s.mu.Lock()
		s.calls = map[string]int{}
		s.mu.Unlock()
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": s.Calls()})
}

func (s *Server) hookApps(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := []map[string]string{}
	for _, a := range s.apps {
		out = append(out, map[string]string{"appid": a.AppID, "type": string(a.Type)})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// User is a test user as one app sees it.
type User struct {
	OpenID   string `json:"openid"`
	UnionID  string `json:"unionid"`
	Nickname string `json:"nickname"`
}

// User returns the identity of test user name in app appID.
func (s *Server) User(appID, name string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.apps[appID]
	if !ok || name == "" {
		return User{}, false
	}
	return User{OpenID: s.openID(appID, name), UnionID: s.unionID(a, name), Nickname: Nickname(name)}, true
}

func (s *Server) hookUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.User(r.URL.Query().Get("appid"), r.URL.Query().Get("user"))
	if !ok {
		http.Error(w, "unknown appid or empty user", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// hookEncrypt produces encryptedData for a mini-program user's current
// session_key: {"appid","user","data"} -> {"encrypted_data","iv"}. Without
// data it encrypts the user's profile with a watermark for the app.
func (s *Server) hookEncrypt(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID string          `json:"appid"`
		User  string          `json:"user"`
		Data  json.RawMessage `json:"data"`
	}
	if !decodeHook(w, r, &req) {
		return
	}
	key, ok := s.SessionKey(req.AppID, req.User)
	if !ok {
		http.Error(w, "no session_key for that user: log in first", http.StatusNotFound)
		return
	}
	plain := []byte(req.Data)
	if len(plain) == 0 {
		u, _ := s.User(req.AppID, req.User)
		plain, _ = json.Marshal(map[string]any{
			"openId": u.OpenID, "nickName": u.Nickname, "gender": 0, "language": "zh_CN",
			"city": "", "province": "", "country": "", "avatarUrl": avatarURL(u.OpenID),
			"unionId":   u.UnionID,
			"watermark": map[string]any{"timestamp": s.Now().Unix(), "appid": req.AppID},
		})
	}
	iv := newSessionKey() // 16 random bytes, base64: the same shape as an iv
	enc, err := Encrypt(key, iv, plain)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"encrypted_data": enc, "iv": iv})
}
