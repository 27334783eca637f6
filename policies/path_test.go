package policies

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, in       string
		forward, clean string
	}{
		{"root", "/", "/", "/"},
		{"plain", "/orders/7", "/orders/7", "/orders/7"},
		{"upper case kept", "/A/B", "/A/B", "/A/B"},
		{"plain sub-delims", "/a:b@c!$&'()*+,=~", "/a:b@c!$&'()*+,=~", "/a:b@c!$&'()*+,=~"},
		{"duplicate slashes", "//a///b", "/a/b", "/a/b"},
		{"dot segments", "/a/./b/../c", "/a/c", "/a/c"},
		{"trailing slash", "/a/b/", "/a/b/", "/a/b/"},
		{"trailing dot-dot names the directory", "/a/b/..", "/a/", "/a/"},
		{"back to the root", "/a/..", "/", "/"},
		{"encoded dot-dot", "/public/%2e%2e/admin", "/admin", "/admin"},
		{"encoded dot", "/public/%2E/admin", "/public/admin", "/public/admin"},
		{"safe escape decoded", "/%61dmin%7e", "/admin~", "/admin~"},
		{"encoded slash stays encoded", "/a%2fb", "/a%2Fb", "/a/b"},
		{"encoded slash before dot-dot", "/public/..%2fprofile", "/public/..%2Fprofile", "/profile"},
		{"encoded semicolon", "/secret%3Bx/y", "/secret%3Bx/y", "/secret;x/y"},
		{"encoded semicolon lower-case hex", "/a%3bb", "/a%3Bb", "/a;b"},
		{"literal semicolon", "/a;b", "/a;b", "/a;b"},
		{"encoded question mark", "/a%3fb", "/a%3Fb", "/a?b"},
		{"encoded hash", "/a%23b", "/a%23b", "/a#b"},
		{"encoded percent", "/a%25b", "/a%25b", "/a%b"},
		{"encoded percent of an escape", "/a%252fb", "/a%252fb", "/a%2fb"},
		{"encoded plus", "/a%2bb", "/a%2Bb", "/a+b"},
		{"encoded space", "/a%20b", "/a%20b", "/a b"},
		{"literal quote", `/"q"`, "/%22q%22", `/"q"`},
		{"non-ASCII encoded", "/%e5%be%ae", "/%E5%BE%AE", "/微"},
		{"non-ASCII literal", "/微", "/%E5%BE%AE", "/微"},
		{"trailing dot kept", "/secret./x", "/secret./x", "/secret./x"},
		{"params then dot-dot", "/public;/../secret/x", "/secret/x", "/secret/x"},
		{"params dot-dot is not a dot segment", "/public/..;/admin/x", "/public/..;/admin/x", "/public/..;/admin/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePath(tc.in)
			if err != nil {
				t.Fatalf("ParsePath(%q) = %v, want Forward %q", tc.in, err, tc.forward)
			}
			if p.Forward != tc.forward || p.Clean != tc.clean {
				t.Errorf("ParsePath(%q) = Forward %q Clean %q, want Forward %q Clean %q", tc.in, p.Forward, p.Clean, tc.forward, tc.clean)
			}
		})
	}
}

func TestParsePathRefuses(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty", "", errNotAbsolute},
		{"relative", "relative", errNotAbsolute},
		{"asterisk form", "*", errNotAbsolute},
		{"bad hex", "/%zz", errBadEscape},
		{"short escape", "/%4", errBadEscape},
		{"percent at the end", "/a%", errBadEscape},
		{"encoded NUL", "/a%00b", errControl},
		{"literal NUL", "/a\x00b", errControl},
		{"literal tab", "/a\tb", errControl},
		{"encoded newline", "/a%0Ab", errControl},
		{"encoded DEL", "/a%7fb", errControl},
		{"literal backslash", `/a\b`, errBackslash},
		{"encoded backslash", "/a%5cb", errBackslash},
		{"encoded backslash upper-case hex", "/a%5Cb", errBackslash},
		{"dot-dot at the root", "/..", errClimbs},
		{"climbs", "/a/../../b", errClimbs},
		{"encoded dot-dot at the root", "/%2e%2e/x", errClimbs},
		{"params dot-dot at the root", "/..;/x", errClimbs},
		{"params dot-dot climbs", "/a/..;x/..;y/b", errClimbs},
		{"encoded slashes climb once decoded", "/a/..%2F..%2Fb", errClimbs},
		{"dot-dot removes a space", "/a/%20/..", errAmbiguous},
		{"dot-dot removes params dot-dot", "/a/b/..;/..", errAmbiguous},
		{"dot-dot removes two segments", "/a/x%2Fy/..", errAmbiguous},
		{"dot-dot removes params only", "/a/;v=1/..", errAmbiguous},
		{"dot-dot removes dots only", "/a/.../..", errAmbiguous},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePath(tc.in)
			if !errors.Is(err, ErrBadPath) || err != tc.want {
				t.Errorf("ParsePath(%q) = %q, %v; want %v", tc.in, p.Forward, err, tc.want)
			}
		})
	}
}

// TestReadings pins the readings of hostile paths; Decide's golden file
// shows what they mean for routes.
func TestReadings(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // kind names and readings, primary first
		fold     bool
	}{
		{"plain", "/orders/7", []string{"normalized /orders/7"}, false},
		{"upper case", "/SECRET/x", []string{"normalized /SECRET/x"}, true},
		{"params", "/profile;x=1/", []string{"normalized /profile;x=1/", "params-removed /profile/"}, false},
		{"encoded params", "/secret%3Bx/y", []string{"normalized /secret;x/y", "params-removed /secret/y"}, false},
		{"trailing dot and space", "/secret.%20./x", []string{"normalized /secret. ./x", "trailing-dots-removed /secret/x"}, false},
		{"params dot-dot", "/admin..;/x", []string{
			"normalized /admin..;/x",
			"params-removed /admin../x",
			"params-and-trailing-dots-removed /admin/x",
		}, false},
		{"params dot-dot climbs", "/public/..;/admin/x", []string{"normalized /public/..;/admin/x", "params-removed /admin/x"}, false},
		{"encoded slash", "/public/..%2fprofile", []string{"normalized /profile", "encoded-slash-kept /public/..%2Fprofile"}, true},
		{"non-ASCII", "/%C5%BFecret", []string{"normalized /ſecret"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePath(tc.in)
			if err != nil {
				t.Fatalf("ParsePath(%q): %v", tc.in, err)
			}
			var got []string
			for i, r := range p.readings[:p.n] {
				got = append(got, readingNames[p.kinds[i]]+" "+r)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("readings of %q (-want +got):\n%s", tc.in, diff)
			}
			if p.fold != tc.fold {
				t.Errorf("ParsePath(%q).fold = %v, want %v", tc.in, p.fold, tc.fold)
			}
		})
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/", "/orders/7", "//a///b/", "/a/./b/../c", "/public/..%2fprofile", "/public/%2e%2e/secret/x",
		"/profile;x=1/", "/secret%3Bx/y", "/SECRET/x", "/secret.%20./x", "/admin..;/x", "/public/..;/admin/x",
		"/public;/../secret/x", "/a%25b%23c%3Fd", "/%E5%BE%AE/微", "/a/b/..;/..", `/"x"/<y>`, "/a%2F../b",
	} {
		f.Add(s)
	}
	f.Fuzz(checkParsePath)
}

// TestParsePathCombinations runs the fuzz checks on every path of up to
// four segments built from the pieces readings treat specially, which
// random mutation rarely puts together.
func TestParsePathCombinations(t *testing.T) {
	pieces := []string{"", "a", "S", ".", "..", "..;", ";v", "a.", "%2e%2E", "%2F", "..%2f", "%20", "%3B", "%C5%BF"}
	var walk func(prefix string, depth int)
	n := 0
	walk = func(prefix string, depth int) {
		checkParsePath(t, prefix)
		n++
		if depth == 4 || t.Failed() {
			return
		}
		for _, piece := range pieces {
			walk(prefix+"/"+piece, depth+1)
		}
	}
	walk("", 0)
	if n < 40000 {
		t.Errorf("checked %d paths, want every combination", n)
	}
}

// checkParsePath checks what ParsePath promises for raw.
func checkParsePath(t *testing.T, raw string) {
	p, err := ParsePath(raw)
	if err != nil {
		if !errors.Is(err, ErrBadPath) {
			t.Fatalf("ParsePath(%q) = %v, want nil or ErrBadPath", raw, err)
		}
		return
	}
	checkForward(t, raw, p.Forward)
	if p.n == 0 || p.Clean != p.readings[0] || p.kinds[0] != 0 {
		t.Fatalf("ParsePath(%q): %d readings, first %q, Clean %q", raw, p.n, p.readings[0], p.Clean)
	}
	for _, r := range p.readings[:p.n] {
		if !strings.HasPrefix(r, "/") || strings.Contains(r, "//") {
			t.Errorf("ParsePath(%q): reading %q is not a clean path", raw, r)
		}
		if needsFold(r) && !p.fold {
			t.Errorf("ParsePath(%q): reading %q needs folding, fold unset", raw, r)
		}
	}
	if plain, _ := isPlain(raw); plain {
		slow, err := parseSlow(raw)
		if err != nil {
			t.Fatalf("parseSlow(%q) = %v, but the path is plain", raw, err)
		}
		if diff := cmp.Diff(slow, p, cmp.AllowUnexported(Path{})); diff != "" {
			t.Errorf("ParsePath(%q): fast path differs from slow path (-slow +fast):\n%s", raw, diff)
		}
	}

	q, err := ParsePath(p.Forward)
	if err != nil {
		t.Fatalf("ParsePath(%q) = %v; it is the Forward of %q", p.Forward, err, raw)
	}
	if q.Forward != p.Forward || q.Clean != p.Clean {
		t.Errorf("ParsePath(%q) = Forward %q Clean %q, want Forward %q Clean %q (those of %q)", p.Forward, q.Forward, q.Clean, p.Forward, p.Clean, raw)
	}
	// The upstream reads Forward one of the ways the policy read raw.
	for _, r := range q.readings[:q.n] {
		if !containsReading(&p, r) {
			t.Errorf("ParsePath(%q): reading %q of Forward %q is not among %q", raw, r, p.Forward, p.readings[:p.n])
		}
	}
}

// checkForward checks that fwd, the Forward of raw, is an absolute path of
// pchars and valid escapes without empty or dot segments.
func checkForward(t *testing.T, raw, fwd string) {
	t.Helper()
	if !strings.HasPrefix(fwd, "/") || strings.Contains(fwd, "//") {
		t.Fatalf("ParsePath(%q).Forward = %q, want an absolute path without //", raw, fwd)
	}
	for seg := range strings.SplitSeq(fwd[1:], "/") {
		if seg == "." || seg == ".." {
			t.Fatalf("ParsePath(%q).Forward = %q, has a dot segment", raw, fwd)
		}
	}
	for i := 0; i < len(fwd); i++ {
		c := fwd[i]
		switch {
		case c == '/' || pchar[c]&literalByte != 0:
		case c == '%' && i+2 < len(fwd) && strings.IndexByte("0123456789ABCDEF", fwd[i+1]) >= 0 && strings.IndexByte("0123456789ABCDEF", fwd[i+2]) >= 0:
			if dec := unhex(fwd[i+1])<<4 | unhex(fwd[i+2]); pchar[dec]&decodeByte != 0 {
				t.Fatalf("ParsePath(%q).Forward = %q, keeps %q encoded", raw, fwd, fwd[i:i+3])
			}
			i += 2
		default:
			t.Fatalf("ParsePath(%q).Forward = %q, has %q at %d", raw, fwd, c, i)
		}
	}
}
