package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// maxAPIBody bounds the JSON body of the API endpoints.
const maxAPIBody = 64 << 10

// readRawBody reads the request's body, refusing bodies over maxAPIBody.
// The bytes are the caller's own (they do not alias fasthttp's buffers).
// Its error is the cause of an invalid request.
func readRawBody(c *fiber.Ctx) ([]byte, error) {
	var r io.Reader
	if c.Request().IsBodyStream() {
		r = c.Context().RequestBodyStream()
	} else {
		r = bytes.NewReader(c.Body())
	}
	b, err := io.ReadAll(io.LimitReader(r, maxAPIBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if len(b) > maxAPIBody {
		// handleError closes the connection, so the unread rest of the body
		// is not parsed as the next request.
		return nil, fmt.Errorf("body over %d bytes", maxAPIBody)
	}
	return b, nil
}

// readJSON decodes the request's JSON body into v, refusing bodies over
// maxAPIBody, unknown fields, trailing data and empty required strings.
func readJSON(c *fiber.Ctx, v any) error {
	b, err := readRawBody(c)
	if err != nil {
		return badRequest("%w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decoding JSON body: %w", err)
	}
	if dec.More() {
		return badRequest("trailing data after the JSON body")
	}
	return nil
}

// readCode reads a {"code"} body. WeChat codes are short printable tokens
// (32 alphanumerics, 64 hex for phone codes); anything else is refused
// before it reaches WeChat.
func readCode(c *fiber.Ctx) (string, error) {
	var req struct {
		Code string `json:"code"`
	}
	if err := readJSON(c, &req); err != nil {
		return "", err
	}
	if req.Code == "" || len(req.Code) > 128 {
		return "", badRequest("code: required, at most 128 characters")
	}
	for i := 0; i < len(req.Code); i++ {
		if b := req.Code[i]; b <= ' ' || b >= 0x7f {
			return "", badRequest("code: printable ASCII only")
		}
	}
	return req.Code, nil
}

func (s *Server) jwks(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/jwk-set+json")
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.Send(s.issuer.Keys().JWKS())
}

// sendPair answers a token pair; it must never be cached.
func sendPair(c *fiber.Ctx, p *session.Pair) error {
	noStore(c)
	return c.JSON(p)
}

// miniprogramLogin: POST /_wxgate/miniprogram/login {"code"} -> token pair.
func (s *Server) miniprogramLogin(c *fiber.Ctx) error {
	if s.mp.AppID == "" {
		return notConfigured("wechat.miniprogram")
	}
	code, err := readCode(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	ws, err := s.wechat.Code2Session(ctx, s.mp, code)
	if err != nil {
		s.metrics.Login("miniprogram", loginResult(err))
		s.loginEvent(c, "miniprogram", nil, s.mp.AppID, scopeMiniProgram, loginResult(err))
		return apiLoginError(err)
	}
	// The session_key stays here; a newer login replaces it.
	if err := s.issuer.SaveSessionKey(ctx, s.mp.AppID, ws.OpenID, ws.SessionKey); err != nil {
		return storeError(err)
	}
	p, err := s.issuer.Login(ctx, session.Identity{OpenID: ws.OpenID, UnionID: ws.UnionID, AppID: s.mp.AppID, Scope: scopeMiniProgram}, nil)
	if err != nil {
		return storeError(err)
	}
	s.metrics.LoggedIn("miniprogram", ws.UnionID != "")
	s.loginEvent(c, "miniprogram", &session.Identity{OpenID: ws.OpenID, UnionID: ws.UnionID}, s.mp.AppID, scopeMiniProgram, "ok")
	return sendPair(c, p)
}

// appLogin: POST /_wxgate/app/login {"code"}: the mobile app's SendAuth
// code -> WeChat user token and profile (kept here) -> token pair.
func (s *Server) appLogin(c *fiber.Ctx) error {
	if s.mobile.AppID == "" {
		return notConfigured("wechat.app")
	}
	code, err := readCode(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	tok, err := s.wechat.ExchangeCode(ctx, s.mobile, code)
	if err != nil {
		s.metrics.Login("app", loginResult(err))
		s.loginEvent(c, "app", nil, s.mobile.AppID, scopeApp, loginResult(err))
		return apiLoginError(err)
	}
	id := session.Identity{OpenID: tok.OpenID, UnionID: tok.UnionID, AppID: s.mobile.AppID, Scope: scopeApp}
	if grantsUserinfo(tok.Scope) {
		info, err := s.wechat.UserInfo(ctx, tok.AccessToken, tok.OpenID, wechatLang(c))
		if err != nil {
			s.metrics.Login("app", loginResult(err))
			s.loginEvent(c, "app", nil, s.mobile.AppID, scopeApp, loginResult(err))
			return apiWeChatError(err)
		}
		id.Nickname, id.Avatar = info.Nickname, info.HeadImgURL
		if id.UnionID == "" {
			id.UnionID = info.UnionID
		}
	}
	p, err := s.issuer.Login(ctx, id, userTokens(tok, s.sessions.Now()))
	if err != nil {
		return storeError(err)
	}
	s.metrics.LoggedIn("app", id.UnionID != "")
	s.loginEvent(c, "app", &id, s.mobile.AppID, scopeApp, "ok")
	return sendPair(c, p)
}

// bearerFamily authenticates an API call's bearer token.
func (s *Server) bearerFamily(c *fiber.Ctx) (*session.Family, error) {
	tok, ok := bearerToken(c)
	if !ok {
		return nil, fmt.Errorf("%w: no bearer token", session.ErrInvalidToken)
	}
	f, err := s.issuer.Authenticate(c.UserContext(), tok)
	if err != nil && !isTokenError(err) {
		return nil, storeError(err)
	}
	return f, err
}

// miniprogramDecrypt: POST /_wxgate/miniprogram/decrypt
// {"encrypted_data","iv"} (bearer) -> the decrypted JSON. Nickname, avatar
// and unionid found in it are merged into the identity.
func (s *Server) miniprogramDecrypt(c *fiber.Ctx) error {
	f, err := s.bearerFamily(c)
	if err != nil {
		return err
	}
	var req struct {
		EncryptedData string `json:"encrypted_data"`
		IV            string `json:"iv"`
	}
	if err := readJSON(c, &req); err != nil {
		return err
	}
	if req.EncryptedData == "" || req.IV == "" {
		return badRequest("encrypted_data and iv are required")
	}
	if f.Identity.Scope != scopeMiniProgram || f.Identity.AppID != s.mp.AppID {
		return badRequest("decrypt needs a mini-program login")
	}
	ctx := c.UserContext()
	key, err := s.issuer.SessionKey(ctx, s.mp.AppID, f.Identity.OpenID)
	if isNotFound(err) {
		return badRequest("no session_key for this user: log in again")
	} else if err != nil {
		return storeError(err)
	}
	plain, err := wechat.DecryptData(key, req.IV, req.EncryptedData, s.mp.AppID)
	if err != nil {
		return err
	}
	var data struct {
		OpenID    string `json:"openId"`
		NickName  string `json:"nickName"`
		AvatarURL string `json:"avatarUrl"`
		UnionID   string `json:"unionId"`
	}
	_ = json.Unmarshal(plain, &data) // DecryptData checked it is JSON
	if data.OpenID != "" && data.OpenID != f.Identity.OpenID {
		return badRequest("the data belongs to another user")
	}
	if data.NickName != "" || data.AvatarURL != "" || data.UnionID != "" {
		_, err := s.issuer.UpdateFamily(ctx, f.ID, func(f *session.Family) {
			if data.NickName != "" {
				f.Identity.Nickname = data.NickName
			}
			if data.AvatarURL != "" {
				f.Identity.Avatar = data.AvatarURL
			}
			if data.UnionID != "" && f.Identity.UnionID == "" {
				f.Identity.UnionID = data.UnionID
			}
		})
		if err != nil && !isTokenError(err) {
			return storeError(err)
		} else if err != nil {
			return err
		}
	}
	noStore(c)
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
	return c.Send(plain)
}

// miniprogramPhone: POST /_wxgate/miniprogram/phone {"code"} (bearer) ->
// getuserphonenumber with the app access token; the phone is stored on the
// identity.
func (s *Server) miniprogramPhone(c *fiber.Ctx) error {
	if s.mp.AppID == "" {
		return notConfigured("wechat.miniprogram")
	}
	f, err := s.bearerFamily(c)
	if err != nil {
		return err
	}
	code, err := readCode(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	info, err := s.phoneNumber(c, code)
	if err != nil {
		return appTokenError(err)
	}
	if _, err := s.issuer.UpdateFamily(ctx, f.ID, func(f *session.Family) { f.Identity.Phone = info.PurePhoneNumber }); err != nil {
		if isTokenError(err) {
			return err
		}
		return storeError(err)
	}
	noStore(c)
	return c.JSON(fiber.Map{
		"phone_number":      info.PhoneNumber,
		"pure_phone_number": info.PurePhoneNumber,
		"country_code":      string(info.CountryCode),
	})
}

// phoneNumber calls getuserphonenumber; if WeChat rejects the app token it
// drops that token (only if still current) and tries once more.
func (s *Server) phoneNumber(c *fiber.Ctx, code string) (*wechat.PhoneInfo, error) {
	ctx := c.UserContext()
	h := s.holders[s.mp.AppID]
	tok, err := h.Get(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.wechat.UserPhoneNumber(ctx, tok.AccessToken, code)
	if err != nil && wechat.IsAppTokenError(err) {
		// Compare-and-invalidate: only a token that is still current is
		// replaced; then try once more.
		if tok, _, err = h.Invalidate(ctx, tok.AccessToken); err != nil {
			return nil, err
		}
		info, err = s.wechat.UserPhoneNumber(ctx, tok.AccessToken, code)
	}
	return info, err
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// tokenRefresh: POST /_wxgate/token/refresh {"refresh_token"} -> new pair.
func (s *Server) tokenRefresh(c *fiber.Ctx) error {
	var req refreshRequest
	if err := readJSON(c, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return badRequest("refresh_token: required")
	}
	p, err := s.issuer.Refresh(c.UserContext(), req.RefreshToken)
	if err != nil {
		if errors.Is(err, session.ErrRefreshReused) {
			s.authEvent(c, slog.LevelWarn, "revocation", nil, slog.String("by", "reuse_detection"))
		}
		if errors.Is(err, session.ErrInvalidGrant) {
			s.authEvent(c, slog.LevelInfo, "refresh", nil, slog.String("kind", "token"), slog.String("result", "invalid_grant"))
			return err
		}
		return storeError(err)
	}
	s.authEvent(c, slog.LevelInfo, "refresh", &session.Identity{OpenID: p.OpenID, UnionID: p.UnionID},
		slog.String("kind", "token"), slog.String("result", "ok"))
	return sendPair(c, p)
}

// tokenRevoke: POST /_wxgate/token/revoke {"refresh_token"} ends the
// token's whole family. Unknown tokens get the same 200 (RFC 7009).
func (s *Server) tokenRevoke(c *fiber.Ctx) error {
	var req refreshRequest
	if err := readJSON(c, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return badRequest("refresh_token: required")
	}
	who, err := s.issuer.RevokeWho(c.UserContext(), req.RefreshToken)
	if err != nil {
		return storeError(err)
	}
	if who != nil {
		s.authEvent(c, slog.LevelInfo, "revocation", who, slog.String("by", "token_revoke"))
	}
	noStore(c)
	return c.JSON(fiber.Map{"revoked": true})
}

func loginResult(err error) string {
	if c, ok := wechat.Code(err); ok {
		return fmt.Sprintf("errcode_%d", c)
	}
	return "wechat_unavailable"
}
