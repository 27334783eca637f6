package wechat

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Session is the answer of /sns/jscode2session.
type Session struct {
	OpenID     string `json:"openid"`
	SessionKey Secret `json:"session_key"`
	UnionID    string `json:"unionid"`
}

// Code2Session redeems a mini program's wx.login code. Like every code
// exchange it is never retried.
func (c *Client) Code2Session(ctx context.Context, app App, code string) (*Session, error) {
	q := url.Values{
		"appid":      {app.AppID},
		"secret":     {app.Secret.Reveal()},
		"js_code":    {code},
		"grant_type": {"authorization_code"},
	}
	var s Session
	if err := c.call(ctx, http.MethodGet, "/sns/jscode2session", q, nil, false, &s); err != nil {
		return nil, fmt.Errorf("exchanging js_code: %w", err)
	}
	if s.OpenID == "" {
		// As in ExchangeCode: a login of nobody.
		return nil, fmt.Errorf("exchanging js_code: %w: answer without an openid", ErrUnavailable)
	}
	return &s, nil
}

// PhoneInfo is the phone_info of /wxa/business/getuserphonenumber.
type PhoneInfo struct {
	PhoneNumber     string      `json:"phoneNumber"`
	PurePhoneNumber string      `json:"purePhoneNumber"`
	CountryCode     countryCode `json:"countryCode"`
}

// countryCode accepts WeChat's countryCode as a string or a number
// (both have been seen; WECHAT-API.md section 4).
type countryCode string

func (c *countryCode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = countryCode(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("countryCode: %w", err)
	}
	*c = countryCode(n.String())
	return nil
}

// UserPhoneNumber redeems a getPhoneNumber code with the app access token.
// A phone code is single use, so the call is not retried.
func (c *Client) UserPhoneNumber(ctx context.Context, appToken Secret, code string) (*PhoneInfo, error) {
	var out struct {
		PhoneInfo PhoneInfo `json:"phone_info"`
	}
	q := url.Values{"access_token": {appToken.Reveal()}}
	err := c.call(ctx, http.MethodPost, "/wxa/business/getuserphonenumber", q, map[string]string{"code": code}, false, &out)
	if err != nil {
		return nil, fmt.Errorf("getting phone number: %w", err)
	}
	return &out.PhoneInfo, nil
}

// ErrBadEncryptedData is the one error DecryptData returns for every
// failure: wrong length, bad padding, bad JSON or a foreign watermark. One
// error for all keeps it from being a padding oracle.
var ErrBadEncryptedData = errors.New("wechat: encrypted data is invalid")

// DecryptData decrypts a mini program's encryptedData (WECHAT-API.md section
// 4): AES-128-CBC with key base64decode(sessionKey) and iv base64decode(iv),
// PKCS#7 padding, a JSON plaintext whose watermark.appid must equal appID.
// It checks lengths before decrypting, so crafted input cannot panic it.
func DecryptData(sessionKey Secret, iv, encryptedData, appID string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(sessionKey.Reveal())
	if err != nil || len(key) != 16 {
		return nil, ErrBadEncryptedData
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return nil, ErrBadEncryptedData
	}
	data, err := base64.StdEncoding.DecodeString(encryptedData)
	if err != nil || len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, ErrBadEncryptedData
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrBadEncryptedData
	}
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(data, data)
	plain, ok := unpad(data)
	if !ok {
		return nil, ErrBadEncryptedData
	}
	var mark struct {
		Watermark struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	if err := json.Unmarshal(plain, &mark); err != nil || mark.Watermark.AppID != appID {
		return nil, ErrBadEncryptedData
	}
	return plain, nil
}

// unpad strips PKCS#7 padding, checking every padding byte.
func unpad(b []byte) ([]byte, bool) {
	n := int(b[len(b)-1])
	if n == 0 || n > aes.BlockSize || n > len(b) {
		return nil, false
	}
	pad := b[len(b)-n:]
	if subtle.ConstantTimeCompare(pad, bytes.Repeat([]byte{byte(n)}, n)) != 1 {
		return nil, false
	}
	return b[:len(b)-n], true
}
