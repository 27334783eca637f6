package session

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// idBytes is the entropy of session IDs, state binding nonces and similar
// opaque tokens: 256 bits, well above DESIGN.md's 128-bit floor.
const idBytes = 32

// idLen is the length of an ID's base64url encoding.
var idLen = base64.RawURLEncoding.EncodedLen(idBytes)

// NewID returns a new random opaque ID, base64url without padding.
func NewID() string {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ValidID reports whether s has the shape of an ID from NewID. Anything
// else (a tampered or random cookie) is rejected before any store lookup.
func ValidID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Hash is what stores key on instead of the raw ID, so that a store dump
// does not hold usable cookies.
func Hash(id string) string {
	h := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewState returns a login state: 32 characters of [a-zA-Z0-9], the form
// WeChat accepts (WECHAT-API.md section 1), drawn without modulo bias.
func NewState() string {
	out := make([]byte, 0, 32)
	buf := make([]byte, 64)
	for len(out) < 32 {
		if _, err := rand.Read(buf); err != nil {
			panic(err)
		}
		for _, b := range buf {
			// 248 = 4*62: reject the tail so every character is equally likely.
			if b < 248 && len(out) < 32 {
				out = append(out, alnum[b%62])
			}
		}
	}
	return string(out)
}

// ValidState reports whether s has the shape of a state from NewState.
func ValidState(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
