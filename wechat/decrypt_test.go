package wechat_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

type vector struct {
	AppID         string `json:"appid"`
	SessionKey    string `json:"session_key"`
	IV            string `json:"iv"`
	EncryptedData string `json:"encrypted_data"`
	Plaintext     string `json:"plaintext"`
}

func loadVector(t testing.TB) vector {
	t.Helper()
	b, err := os.ReadFile("testdata/wechat-decrypt-vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDecryptOfficialVector is WeChat's known-answer vector.
func TestDecryptOfficialVector(t *testing.T) {
	v := loadVector(t)
	got, err := wechat.DecryptData(wechat.Secret(v.SessionKey), v.IV, v.EncryptedData, v.AppID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != v.Plaintext {
		t.Errorf("DecryptData(vector) = %s, want %s", got, v.Plaintext)
	}
}

func TestDecryptRejects(t *testing.T) {
	v := loadVector(t)
	raw, _ := base64.StdEncoding.DecodeString(v.EncryptedData)
	enc := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	// A payload with bad padding but the right length: flip the last byte.
	badPad := append([]byte{}, raw...)
	badPad[len(badPad)-1] ^= 0xff
	foreign, _ := wechatsim.Encrypt(v.SessionKey, v.IV, []byte(`{"watermark":{"appid":"wxOTHER"}}`))
	notJSON, _ := wechatsim.Encrypt(v.SessionKey, v.IV, []byte(`not json`))
	tests := []struct {
		name, key, iv, data, appid string
	}{
		{"prefix aaaa (official negative)", v.SessionKey, v.IV, "aaaa" + v.EncryptedData, v.AppID},
		{"truncated", v.SessionKey, v.IV, enc(raw[:len(raw)-16]), v.AppID},
		{"misaligned", v.SessionKey, v.IV, enc(raw[:len(raw)-3]), v.AppID},
		{"empty", v.SessionKey, v.IV, "", v.AppID},
		{"bad padding", v.SessionKey, v.IV, enc(badPad), v.AppID},
		{"foreign watermark", v.SessionKey, v.IV, foreign, v.AppID},
		{"wrong appid", v.SessionKey, v.IV, v.EncryptedData, "wxSOMEONEELSE"},
		{"not json", v.SessionKey, v.IV, notJSON, v.AppID},
		{"short iv", v.SessionKey, "AAAA", v.EncryptedData, v.AppID},
		{"bad key", "!!", v.IV, v.EncryptedData, v.AppID},
		{"not base64", v.SessionKey, v.IV, "%%%%", v.AppID},
	}
	for _, tc := range tests {
		_, err := wechat.DecryptData(wechat.Secret(tc.key), tc.iv, tc.data, tc.appid)
		if !errors.Is(err, wechat.ErrBadEncryptedData) {
			t.Errorf("%s: err = %v, want ErrBadEncryptedData", tc.name, err)
		}
	}
}

// FuzzDecrypt checks that no input panics the decryptor and that anything
// it accepts carries the right watermark. CI runs it briefly.
func FuzzDecrypt(f *testing.F) {
	v := loadVector(f)
	f.Add(v.SessionKey, v.IV, v.EncryptedData)
	f.Add(v.SessionKey, v.IV, "aaaa"+v.EncryptedData)
	f.Add("", "", "")
	f.Add(v.SessionKey, v.IV, "AAAAAAAAAAAAAAAAAAAAAA==")
	f.Fuzz(func(t *testing.T, key, iv, data string) {
		out, err := wechat.DecryptData(wechat.Secret(key), iv, data, v.AppID)
		if err != nil {
			if !errors.Is(err, wechat.ErrBadEncryptedData) {
				t.Fatalf("unexpected error type %v", err)
			}
			return
		}
		var m struct{ Watermark struct{ AppID string } }
		if json.Unmarshal(out, &m) != nil || m.Watermark.AppID != v.AppID {
			t.Fatalf("accepted %q without the watermark", out)
		}
	})
}
