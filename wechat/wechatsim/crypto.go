package wechatsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
)

// Encrypt produces WeChat's encryptedData for plaintext: AES-128-CBC with
// PKCS#7 padding, key = base64decode(sessionKey), iv = base64decode(iv), the
// result base64-encoded (WECHAT-API.md section 4).
func Encrypt(sessionKey, iv string, plaintext []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil || len(key) != 16 {
		return "", fmt.Errorf("wechatsim: session_key is not base64 of 16 bytes")
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return "", fmt.Errorf("wechatsim: iv is not base64 of 16 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := append(append([]byte{}, plaintext...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf), nil
}
