package wechatsim

import (
	"encoding/json"
	"os"
	"testing"
)

// TestEncryptOfficialVector runs WeChat's decryption known-answer vector in
// reverse: encrypting its plaintext with its key and iv must give its
// ciphertext.
func TestEncryptOfficialVector(t *testing.T) {
	b, err := os.ReadFile("../testdata/wechat-decrypt-vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		SessionKey    string `json:"session_key"`
		IV            string `json:"iv"`
		EncryptedData string `json:"encrypted_data"`
		Plaintext     string `json:"plaintext"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	got, err := Encrypt(v.SessionKey, v.IV, []byte(v.Plaintext))
	if err != nil {
		t.Fatal(err)
	}
	if got != v.EncryptedData {
		t.Errorf("Encrypt(vector) = %q, want %q", got, v.EncryptedData)
	}
	if _, err := Encrypt("short", v.IV, nil); err == nil {
		t.Error("Encrypt with a bad key: no error")
	}
}
