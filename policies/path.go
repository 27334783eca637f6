package policies

import (
	"errors"
	"strings"
)

// ErrBadPath is returned, wrapped with the reason, by ParsePath for a path
// the gateway refuses to route (answered with 400).
var ErrBadPath = errors.New("policies: path cannot be normalized")

// The reasons ParsePath gives. They are built once: a client sending bad
// paths in a loop costs no formatting.
var (
	errNotAbsolute = wrapBadPath("does not start with /")
	errBadEscape   = wrapBadPath("invalid percent-encoding")
	errControl     = wrapBadPath("control character")
	errBackslash   = wrapBadPath("backslash")
	errClimbs      = wrapBadPath("dot segments climb above the root")
	errAmbiguous   = wrapBadPath("dot segment removes a segment that other readings do not remove")
)

func wrapBadPath(why string) error { return &pathError{why} }

// pathError is ErrBadPath with its reason.
type pathError struct{ why string }

func (e *pathError) Error() string { return ErrBadPath.Error() + ": " + e.why }
func (e *pathError) Unwrap() error { return ErrBadPath }

// Path is a request path as ParsePath read it: what wxgate forwards, and
// every reading an upstream could give it. The engine decides on all of
// them (Engine.Decide). The zero Path is judged as "/".
type Path struct {
	// Forward is the path to send upstream, escaped: dot segments (also
	// %2E-encoded ones) removed, duplicate slashes folded, a trailing slash
	// kept, and every segment escaped one way: safe characters decoded,
	// other bytes (space, quotes, non-ASCII) encoded, hex in upper case.
	// Delimiters the client encoded (%2F %3B %3F %23 %25, and %2B, which
	// form decoders read as a space) stay encoded, and a literal ";" stays
	// literal, so the upstream splits the path where the policy did.
	Forward string
	// Clean is the primary reading: decoded once, dot segments removed,
	// duplicate slashes folded. For logs and explanations; never forwarded,
	// since decoding turns an encoded delimiter into a real one.
	Clean string

	// readings holds the n distinct readings in the order of their kinds;
	// readings[0] is Clean. An array, not a slice: a plain path costs no
	// allocation.
	readings [numKinds]string
	kinds    [numKinds]uint8
	n        uint8
	// fold reports whether some reading has upper-case or non-ASCII bytes,
	// so that matching case-insensitively can change the answer.
	fold bool
}

// A reading's kind is a set of these bits. Kind 0 is the primary reading:
// decode everything, then split on "/".
const (
	// kindParams cuts each segment at its first ";", as Tomcat and Spring
	// drop path parameters (so "..;" climbs like "..").
	kindParams uint8 = 1 << iota
	// kindDots removes trailing dots and spaces of each segment, as IIS
	// (Windows file names) does; "." and ".." are left alone.
	kindDots
	// kindSplitFirst splits on literal "/" and then decodes each segment, so
	// an encoded slash stays inside its segment (written "%2F" in the
	// reading).
	kindSplitFirst

	numKinds = 1 << iota
)

// The names of the readings, by kind, then by kind for the case-folded
// pass (index numKinds+kind). Decision.Reading is one of them.
var readingNames = [2 * numKinds]string{
	PrimaryReading,
	"params-removed",
	"trailing-dots-removed",
	"params-and-trailing-dots-removed",
	"encoded-slash-kept",
	"encoded-slash-kept, params-removed",
	"encoded-slash-kept, trailing-dots-removed",
	"encoded-slash-kept, params-and-trailing-dots-removed",
	"case-folded",
	"params-removed, case-folded",
	"trailing-dots-removed, case-folded",
	"params-and-trailing-dots-removed, case-folded",
	"encoded-slash-kept, case-folded",
	"encoded-slash-kept, params-removed, case-folded",
	"encoded-slash-kept, trailing-dots-removed, case-folded",
	"encoded-slash-kept, params-and-trailing-dots-removed, case-folded",
}

// PrimaryReading is Decision.Reading when the primary reading (Path.Clean,
// matched case-sensitively) decided.
const PrimaryReading = "normalized"

// rootPath stands in for the zero Path.
var rootPath = Path{Forward: "/", Clean: "/", readings: [numKinds]string{"/"}, n: 1}

// ParsePath reads raw, a request path as received (still escaped, without
// the query), into the path to forward and the readings to decide on.
//
// It refuses, with an error wrapping ErrBadPath, a path that does not start
// with "/", has a bad escape, a control character or NUL, or a backslash
// (literal or encoded), whose dot segments climb above the root on any
// reading ("/..;/x", "/a/..%2F..%2Fb"), or where a ".." removes a segment
// that some reading turns into a dot segment or splits ("/a/b/..;/.."):
// the upstream could not be sent a path that means to it what the policy
// decided. Browsers never send the last two.
func ParsePath(raw string) (Path, error) {
	if raw == "" || raw[0] != '/' {
		return Path{}, errNotAbsolute
	}
	if plain, fold := isPlain(raw); plain {
		return Path{Forward: raw, Clean: raw, readings: [numKinds]string{raw}, n: 1, fold: fold}, nil
	}
	return parseSlow(raw)
}

// isPlain reports whether raw is its own Forward and its only reading: only
// characters that need no escaping and mean the same to every upstream, no
// empty or dot segments, no segment ending in a dot. Most paths are plain,
// and cost ParsePath no allocation. fold reports upper-case letters.
func isPlain(raw string) (plain, fold bool) {
	segStart := 0 // index of the current segment's first byte
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '/' {
			if i > 0 && !plainSegment(raw[segStart:i]) {
				return false, false
			}
			segStart = i + 1
			continue
		}
		if pchar[c]&plainByte == 0 {
			return false, false
		}
		if 'A' <= c && c <= 'Z' {
			fold = true
		}
	}
	// The last segment may be empty: that is the trailing slash.
	last := raw[segStart:]
	return last == "" || plainSegment(last), fold
}

func plainSegment(s string) bool {
	return s != "" && s[len(s)-1] != '.'
}

func parseSlow(raw string) (Path, error) {
	segs := strings.Split(raw[1:], "/")
	dec := make([]string, len(segs))
	var hasSemi, hasTrail, hasSlash bool
	for i, s := range segs {
		d, err := unescape(s)
		if err != nil {
			return Path{}, err
		}
		dec[i] = d
		hasSemi = hasSemi || strings.IndexByte(d, ';') >= 0
		hasSlash = hasSlash || strings.IndexByte(d, '/') >= 0
		hasTrail = hasTrail || trailingDotOrSpace(d)
	}
	fwd, err := forwardPath(segs, dec)
	if err != nil {
		return Path{}, err
	}
	p := Path{Forward: fwd}
	buf := make([]string, 0, len(dec))
	for kind := range uint8(numKinds) {
		// A transform that changes no segment gives a reading already made.
		if kind&kindParams != 0 && !hasSemi || kind&kindDots != 0 && !hasTrail || kind&kindSplitFirst != 0 && !hasSlash {
			continue
		}
		r, err := reading(dec, kind, buf)
		if err != nil {
			return Path{}, err
		}
		if !containsReading(&p, r) {
			p.readings[p.n], p.kinds[p.n] = r, kind
			p.n++
			p.fold = p.fold || needsFold(r)
		}
	}
	p.Clean = p.readings[0]
	return p, nil
}

func containsReading(p *Path, r string) bool {
	for _, have := range p.readings[:p.n] {
		if have == r {
			return true
		}
	}
	return false
}

// trailingDotOrSpace reports whether kindDots may change d or one of its
// parts: a dot or space before a "/", a ";" (which kindParams may cut at)
// or the end.
func trailingDotOrSpace(d string) bool {
	for i := 0; i < len(d); i++ {
		if (d[i] == '.' || d[i] == ' ') && (i+1 == len(d) || d[i+1] == '/' || d[i+1] == ';') {
			return true
		}
	}
	return false
}

// needsFold reports whether r has bytes that case-insensitive matching
// treats differently: upper-case ASCII, or any non-ASCII (regexp's (?i)
// folds the long s "ſ" to "s" and the Kelvin sign to "k").
func needsFold(r string) bool {
	for i := 0; i < len(r); i++ {
		if c := r[i]; 'A' <= c && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}

// forwardPath builds Path.Forward from the raw segments (validated) and
// their decodings.
func forwardPath(segs, dec []string) (string, error) {
	keep := make([]int, 0, len(segs)) // indexes of the segments kept
	for i, d := range dec {
		switch d {
		case "", ".":
		case "..":
			if len(keep) == 0 {
				return "", errClimbs
			}
			// Removing the segment here is right only if every reading
			// removes it too: "..;" is a ".." once params go, and "a%2Fb"
			// is two segments once decoded.
			if ambiguous(dec[keep[len(keep)-1]]) {
				return "", errAmbiguous
			}
			keep = keep[:len(keep)-1]
		default:
			keep = append(keep, i)
		}
	}
	var b strings.Builder
	size := 1
	for _, i := range keep {
		// Escapes mostly shrink or keep a segment; only literal bytes that
		// need escaping, which browsers do not send, grow it.
		size += 1 + len(segs[i])
	}
	b.Grow(size)
	for _, i := range keep {
		b.WriteByte('/')
		writeCanonical(&b, segs[i])
	}
	if len(keep) == 0 || isDirectory(dec[len(dec)-1]) {
		b.WriteByte('/')
	}
	return b.String(), nil
}

// ambiguous reports whether some reading does not see the decoded segment
// d as one ordinary segment.
func ambiguous(d string) bool {
	if strings.IndexByte(d, '/') >= 0 {
		return true
	}
	for _, kind := range [...]uint8{kindParams, kindDots, kindParams | kindDots} {
		switch transform(d, kind) {
		case "", ".", "..":
			return true
		}
	}
	return false
}

// isDirectory reports whether a last segment s makes a trailing slash: "/a/"
// and "/a/b/.." name the directory, not the file "/a".
func isDirectory(s string) bool { return s == "" || s == "." || s == ".." }

// transform applies the kindParams and kindDots bits of kind to one segment.
func transform(s string, kind uint8) string {
	if kind&kindParams != 0 {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
	}
	if kind&kindDots != 0 && s != "." && s != ".." {
		s = strings.TrimRight(s, ". ")
	}
	return s
}

// reading returns the reading of kind of the decoded segments dec: split,
// transformed, then dot segments removed (after the transforms, so "..;"
// climbs). buf is scratch space.
func reading(dec []string, kind uint8, buf []string) (string, error) {
	out := buf[:0]
	last := ""
	add := func(s string) error {
		s = transform(s, kind)
		last = s
		switch s {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return errClimbs
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
		return nil
	}
	for _, d := range dec {
		if kind&kindSplitFirst != 0 {
			if err := add(d); err != nil {
				return "", err
			}
			continue
		}
		for part := range strings.SplitSeq(d, "/") {
			if err := add(part); err != nil {
				return "", err
			}
		}
	}
	var b strings.Builder
	size := 1
	for _, s := range out {
		size += 1 + len(s) + 2*strings.Count(s, "/")
	}
	b.Grow(size)
	for _, s := range out {
		b.WriteByte('/')
		if kind&kindSplitFirst != 0 {
			// An encoded slash inside a segment is not a separator.
			s = strings.ReplaceAll(s, "/", "%2F")
		}
		b.WriteString(s)
	}
	if len(out) == 0 || isDirectory(last) {
		b.WriteByte('/')
	}
	return b.String(), nil
}
