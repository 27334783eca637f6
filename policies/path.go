package policies

import (
	"errors"
	"strings"
)

// ErrBadPath is returned by NormalizePath for a path the gateway refuses to
// route (answered with 400).
var ErrBadPath = errors.New("policies: path cannot be normalized")

// NormalizePath returns the path as the upstream will see it: percent-decoded
// once, dot segments removed, duplicate slashes folded. It refuses (with
// ErrBadPath) paths that do not start with "/", bad escapes, control
// characters including NUL, backslashes, and dot segments that would climb
// above the root: each is a classic way to make a rule and the upstream
// disagree about which resource is meant.
func NormalizePath(raw string) (string, error) {
	if raw == "" || raw[0] != '/' {
		return "", ErrBadPath
	}
	dec, err := unescape(raw)
	if err != nil {
		return "", err
	}
	segs := strings.Split(dec, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs[1:] {
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) == 0 {
				return "", ErrBadPath
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
	}
	p := "/" + strings.Join(out, "/")
	// Keep a trailing slash: /dir/ and /dir are different resources.
	if len(out) > 0 && (strings.HasSuffix(dec, "/") || strings.HasSuffix(dec, "/.") || strings.HasSuffix(dec, "/..")) {
		p += "/"
	}
	return p, nil
}

func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%\\") && !hasControl(s) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", ErrBadPath
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "", ErrBadPath
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
