package session

import (
	"encoding/binary"
	"errors"
	"slices"
	"time"
)

// The memory store keeps each value packed (issue 10): an idle session's
// record was 820 bytes of JSON, most of what the session cost, and a
// third of it is what every record repeats (field names) or spells out
// long (times, WeChat's base64 tokens). Packing writes those shorter
// and is undone exactly: Get returns the bytes Set was given, which Swap
// compares, and the Manager's JSON, the Redis store's values and snapshot
// files are what they were. It is a fixed code, not a compressor: no
// window, no dictionary to learn, a single pass each way, so that a read
// (on the decoded cache's miss) costs about 0.4 µs next to the 6 µs of
// decoding the JSON it returns, and a write about 1.4 µs (BenchmarkMemory).
// What it gains does not depend on what repeats within a value: random
// tokens pack as well as the benchmark's.
//
// A packed value is one of
//
//	""                           the empty value
//	packRaw, the value           when packing would not make it shorter
//	packCoded, uvarint length, the value coded
//
// and a coded value is a run of these, in which only the ops are bytes
// below 0x20 (which JSON as encoding/json writes never holds):
//
//	a byte of 0x20 or more       itself
//	opLiteral, a byte            that byte
//	1 to len(phrases)            phrases[op-1]
//	opRun, uvarint n, 3n bytes   4n characters of base64url, 6 bits each
//	opTimeUTC, varint d          a time in RFC 3339 with nanoseconds and Z,
//	                             d nanoseconds after the value's last time
//	                             (0 before the first)
//	opTimeOffset, varint m, varint d
//	                             the same with the offset m minutes east
const (
	packRaw   = 0
	packCoded = 1
)

const (
	opLiteral    = 0x00
	opRun        = 0x1d
	opTimeUTC    = 0x1e
	opTimeOffset = 0x1f
)

// phrases are the pieces of JSON every stored Session and Family repeats
// (session.go, tokens.go), and WeChat's usual prefixes. Packed values name
// them by their place, ops 1 to 28. Nothing packed outlives the process (a
// snapshot holds values unpacked), so the list may change with any version.
var phrases = [...]string{
	`{"identity":{"openid":"`,
	`","identity":{"openid":"`,
	`","unionid":"`,
	`","appid":"wx`,
	`","scope":"snsapi_`,
	`","scope":"`,
	`","nickname":"`,
	`","avatar":"`,
	`https://thirdwx.qlogo.cn/mmopen/`,
	`","phone":"`,
	`"},"tokens":{"access_token":"`,
	`","expires_at":"`,
	`","refresh_token":"`,
	`","refresh_expires_at":"`,
	`,"refresh_failures":`,
	`,"retry_at":"`,
	`},"created":"`,
	`","created":"`,
	`","last_seen":"`,
	`","ends":"`,
	`{"id":"`,
	`},"current":"`,
	`,"revoked":true`,
	`","rotated":"`,
	`"}`,
}

// Every phrase's op is below opRun (a compile error otherwise).
const _ = uint8(opRun - 1 - len(phrases))

// phrasesByFirst lists, for each byte, the ops of the phrases that start
// with it, longest first: the packer takes the longest that matches.
var phrasesByFirst = func() (idx [256][]byte) {
	for i, p := range phrases {
		idx[p[0]] = append(idx[p[0]], byte(i+1))
	}
	for _, ops := range idx {
		slices.SortFunc(ops, func(a, b byte) int { return len(phrases[b-1]) - len(phrases[a-1]) })
	}
	return idx
}()

// runMin is the fewest 4-character groups opRun codes: three groups save
// a byte (12 characters in 11).
const runMin = 3

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// base64Pairs holds the two characters of every 12 bits, little-endian:
// a read writes a run two characters at a time.
var base64Pairs = func() (t [4096]uint16) {
	for i := range t {
		t[i] = uint16(base64URL[i>>6]) | uint16(base64URL[i&63])<<8
	}
	return t
}()

// base64Bits maps a base64url character to its 6 bits, and others to 0xff.
var base64Bits = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := range len(base64URL) {
		t[base64URL[i]] = byte(i)
	}
	return t
}()

// appendPacked appends value packed to dst.
func appendPacked(dst, value []byte) []byte {
	if len(value) == 0 {
		return dst
	}
	start := len(dst)
	dst = append(dst, packCoded)
	dst = binary.AppendUvarint(dst, uint64(len(value)))
	var last int64
	for i := 0; i < len(value); {
		c := value[i]
		if op, n := phraseAt(value[i:]); n > 0 {
			dst = append(dst, op)
			i += n
			continue
		}
		if '0' <= c && c <= '9' {
			if n, t, offset, utc := timeAt(value[i:]); n > 0 {
				if utc {
					dst = append(dst, opTimeUTC)
				} else {
					dst = append(dst, opTimeOffset)
					dst = binary.AppendVarint(dst, int64(offset))
				}
				dst = binary.AppendVarint(dst, t-last)
				last = t
				i += n
				continue
			}
		}
		if groups := runAt(value[i:]); groups >= runMin {
			dst = append(dst, opRun)
			dst = binary.AppendUvarint(dst, uint64(groups))
			for g := range groups {
				s := value[i+4*g : i+4*g+4]
				bits := uint32(base64Bits[s[0]])<<18 | uint32(base64Bits[s[1]])<<12 | uint32(base64Bits[s[2]])<<6 | uint32(base64Bits[s[3]])
				dst = append(dst, byte(bits>>16), byte(bits>>8), byte(bits))
			}
			i += 4 * groups
			continue
		}
		if c < 0x20 {
			dst = append(dst, opLiteral)
		}
		dst = append(dst, c)
		i++
	}
	if len(dst)-start > len(value) {
		dst = append(dst[:start], packRaw)
		dst = append(dst, value...)
	}
	return dst
}

// phraseAt returns the op of the longest phrase s starts with and its
// length, or 0, 0.
func phraseAt(s []byte) (op byte, n int) {
	for _, op := range phrasesByFirst[s[0]] {
		p := phrases[op-1]
		if len(s) >= len(p) && string(s[:len(p)]) == p {
			return op, len(p)
		}
	}
	return 0, 0
}

// runAt returns how many groups of 4 base64url characters s starts with.
func runAt(s []byte) int {
	n := 0
	for n < len(s) && base64Bits[s[n]] != 0xff {
		n++
	}
	return n / 4
}

// timeAt reads the time s starts with, as encoding/json writes a
// time.Time (RFC 3339 with nanoseconds, trailing zeros cut), returning its
// length, unix nanoseconds and offset, or 0 if s starts with no time that
// appendTime writes back exactly.
func timeAt(s []byte) (n int, t int64, offset int, utc bool) {
	// 2006-01-02T15:04:05
	const layout = "dddd-dd-ddTdd:dd:dd"
	if len(s) < len(layout)+1 {
		return 0, 0, 0, false
	}
	for i := range len(layout) {
		if layout[i] == 'd' && (s[i] < '0' || s[i] > '9') || layout[i] != 'd' && s[i] != layout[i] {
			return 0, 0, 0, false
		}
	}
	num := func(i, j int) int {
		v := 0
		for _, c := range s[i:j] {
			v = v*10 + int(c-'0')
		}
		return v
	}
	n = len(layout)
	nsec := 0
	if s[n] == '.' {
		digits := 0
		for n++; n < len(s) && '0' <= s[n] && s[n] <= '9' && digits < 9; n++ {
			nsec = nsec*10 + int(s[n]-'0')
			digits++
		}
		for range 9 - digits {
			nsec *= 10
		}
	}
	switch {
	case n < len(s) && s[n] == 'Z':
		n++
		utc = true
	case n+6 <= len(s) && (s[n] == '+' || s[n] == '-') && s[n+3] == ':':
		for _, i := range []int{1, 2, 4, 5} {
			if s[n+i] < '0' || s[n+i] > '9' {
				return 0, 0, 0, false
			}
		}
		offset = num(n+1, n+3)*60 + num(n+4, n+6)
		if s[n] == '-' {
			offset = -offset
		}
		n += 6
	default:
		return 0, 0, 0, false
	}
	// Years where unix nanoseconds, with any offset, cannot overflow.
	year := num(0, 4)
	if year < 1900 || year > 2200 {
		return 0, 0, 0, false
	}
	local := time.Date(year, time.Month(num(5, 7)), num(8, 10), num(11, 13), num(14, 16), num(17, 19), nsec, time.UTC)
	t = local.UnixNano() - int64(offset)*int64(time.Minute)
	// Written back, it must be the same text: not a 31 February, not
	// trailing zeros, not -00:00.
	var buf [40]byte
	if string(appendTime(buf[:0], t, offset, utc)) != string(s[:n]) {
		return 0, 0, 0, false
	}
	return n, t, offset, utc
}

// appendTime appends t (unix nanoseconds) offset minutes east, as
// time.Time's MarshalJSON would without the quotes: Z if utc, else the
// offset, even +00:00.
func appendTime(dst []byte, t int64, offset int, utc bool) []byte {
	local := time.Unix(0, t+int64(offset)*int64(time.Minute)).UTC()
	year, month, day := local.Date()
	hour, minute, sec := local.Clock()
	ns := local.Nanosecond()
	if year < 0 || year > 9999 {
		year = 0 // never packed: timeAt takes 1900 to 2200
	}
	dst = append(dst,
		digits[year/100*2], digits[year/100*2+1], digits[year%100*2], digits[year%100*2+1], '-',
		digits[month*2], digits[month*2+1], '-',
		digits[day*2], digits[day*2+1], 'T',
		digits[hour*2], digits[hour*2+1], ':',
		digits[minute*2], digits[minute*2+1], ':',
		digits[sec*2], digits[sec*2+1])
	if ns != 0 {
		var b [10]byte
		b[0] = '.'
		for i := 9; i > 1; i -= 2 {
			r := ns % 100
			b[i-1], b[i] = digits[r*2], digits[r*2+1]
			ns /= 100
		}
		b[1] = byte('0' + ns)
		n := 10
		for b[n-1] == '0' {
			n--
		}
		dst = append(dst, b[:n]...)
	}
	if utc {
		return append(dst, 'Z')
	}
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	h, m := offset/60%100, offset%60
	return append(dst, sign, digits[h*2], digits[h*2+1], ':', digits[m*2], digits[m*2+1])
}

// digits holds 00 to 99, two bytes each.
const digits = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// errPacked is a packed value that does not unpack: never one that
// appendPacked wrote.
var errPacked = errors.New("session: malformed packed value")

// maxExpansion bounds how many bytes a packed byte stands for (a phrase
// from its op; TestPhrasesFitExpansion keeps every phrase within it), so
// that a malformed length allocates no more.
const maxExpansion = 32

// unpackedLen returns the length of the value packed in p (0 if
// malformed, which unpack reports).
func unpackedLen(p string) int {
	switch {
	case p == "":
		return 0
	case p[0] == packRaw:
		return len(p) - 1
	case p[0] == packCoded:
		if n, w := uvarint(p[1:]); w > 0 && n <= maxExpansion*uint64(len(p)) {
			return int(n)
		}
	}
	return 0
}

// unpack appends the value packed in p to dst.
func unpack(dst []byte, p string) ([]byte, error) {
	if p == "" {
		return dst, nil
	}
	switch p[0] {
	case packRaw:
		return append(dst, p[1:]...), nil
	case packCoded:
		n, w := uvarint(p[1:])
		if w <= 0 || n > maxExpansion*uint64(len(p)) {
			return dst, errPacked
		}
		start := len(dst)
		dst, err := appendUnpacked(dst, p[1+w:])
		if err != nil || uint64(len(dst)-start) != n {
			return dst, errPacked
		}
		return dst, nil
	}
	return dst, errPacked
}

// appendUnpacked appends the coded value c to dst.
func appendUnpacked(dst []byte, c string) ([]byte, error) {
	var last int64
	for i := 0; i < len(c); {
		op := c[i]
		if op >= 0x20 {
			j := i + 1
			for j < len(c) && c[j] >= 0x20 {
				j++
			}
			dst = append(dst, c[i:j]...)
			i = j
			continue
		}
		i++
		switch {
		case op == opLiteral:
			if i == len(c) {
				return dst, errPacked
			}
			dst = append(dst, c[i])
			i++
		case int(op) <= len(phrases):
			dst = append(dst, phrases[op-1]...)
		case op == opRun:
			groups, w := uvarint(c[i:])
			if w <= 0 || groups > uint64(len(c)-i-w)/3 {
				return dst, errPacked
			}
			i += w
			o := len(dst)
			dst = slices.Grow(dst, 4*int(groups))[:o+4*int(groups)]
			in, out := c[i:i+3*int(groups)], dst[o:]
			for len(in) >= 3 && len(out) >= 4 {
				bits := uint(in[0])<<16 | uint(in[1])<<8 | uint(in[2])
				binary.LittleEndian.PutUint32(out, uint32(base64Pairs[bits>>12&0xfff])|uint32(base64Pairs[bits&0xfff])<<16)
				in, out = in[3:], out[4:]
			}
			i += 3 * int(groups)
		case op == opTimeUTC || op == opTimeOffset:
			var offset int64
			w := 1
			if op == opTimeOffset {
				offset, w = varint(c[i:])
				if w <= 0 || offset < -100*60 || offset > 100*60 {
					return dst, errPacked
				}
				i += w
			}
			d, w := varint(c[i:])
			if w <= 0 {
				return dst, errPacked
			}
			i += w
			last += d
			dst = appendTime(dst, last, int(offset), op == opTimeUTC)
		default:
			return dst, errPacked
		}
	}
	return dst, nil
}

// uvarint is binary.Uvarint of a string.
func uvarint(s string) (uint64, int) {
	var v uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		b := s[i]
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, -1
			}
			return v | uint64(b)<<(7*i), i + 1
		}
		v |= uint64(b&0x7f) << (7 * i)
	}
	return 0, 0
}

// varint is binary.Varint of a string.
func varint(s string) (int64, int) {
	u, n := uvarint(s)
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v, n
}
