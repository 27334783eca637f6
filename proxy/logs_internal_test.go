package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// TestPseudonymIsHMAC: the allocation-free pseudonym is HMAC-SHA-256 as
// crypto/hmac computes it, for keys and users shorter and longer than a
// block and than its stack buffer.
func TestPseudonymIsHMAC(t *testing.T) {
	for _, keyLen := range []int{0, 1, 32, 63, 64, 65, 200} {
		for _, userLen := range []int{0, 1, 28, 127, 128, 129, 500} {
			key := []byte(strings.Repeat("k", keyLen))
			user := strings.Repeat("u", userLen)
			m := hmac.New(sha256.New, key)
			m.Write([]byte(user))
			want := hex.EncodeToString(m.Sum(nil)[:8])
			var got [16]byte
			pseudonym(&got, key, user)
			if string(got[:]) != want {
				t.Errorf("key %d bytes, user %d bytes: %s, want %s", keyLen, userLen, got, want)
			}
		}
	}
}
