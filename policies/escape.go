package policies

import "strings"

// Classes of a byte in a path segment (RFC 3986 pchar and its subsets).
const (
	// literalByte: a pchar, sent as is when the client sent it literally.
	literalByte = 1 << iota
	// decodeByte: a pchar that means the same to every upstream encoded or
	// not, so "%XX" of it is sent decoded. Not ";" (a path parameter to
	// Tomcat) and not "+" (a space to form decoders).
	decodeByte
	// plainByte: a literal byte that keeps a path on ParsePath's fast path.
	plainByte
)

// pchar classifies bytes; built once from the RFC's sets.
var pchar = func() (t [256]uint8) {
	const (
		unreserved = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
		subDelims  = "!$&'()*+,;="
	)
	for _, c := range []byte(unreserved + subDelims + ":@") {
		t[c] = literalByte | decodeByte | plainByte
	}
	t[';'] = literalByte
	t['+'] = literalByte | plainByte
	return t
}()

// unescape percent-decodes one raw segment, refusing bad escapes, control
// characters and backslashes, literal or encoded.
func unescape(s string) (string, error) {
	n := 0 // escapes
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", errBadEscape
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			n++
		}
		if err := checkByte(c); err != nil {
			return "", err
		}
	}
	if n == 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s)-2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		b = append(b, c)
	}
	return string(b), nil
}

func checkByte(c byte) error {
	switch {
	case c < 0x20 || c == 0x7f:
		return errControl
	case c == '\\':
		return errBackslash
	}
	return nil
}

// writeCanonical writes the raw segment s (validated by unescape) escaped
// the one way Path.Forward documents.
func writeCanonical(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			if pchar[c]&decodeByte != 0 {
				b.WriteByte(c)
			} else {
				writeEscaped(b, c)
			}
		case pchar[c]&literalByte != 0:
			b.WriteByte(c)
		default:
			writeEscaped(b, c)
		}
	}
}

func writeEscaped(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&15])
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
