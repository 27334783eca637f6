package policies

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the expected part of testdata/decide/*.txt from what the code does")

// The parts of a testdata/decide file, in the manner of Caddy's
// caddyfile_adapt tests: input and expected output in one file.
const (
	requestsLine  = "-- requests --\n"
	decisionsLine = "-- decisions --\n"
)

// TestDecideGolden decides the requests of each testdata/decide/*.txt
// against the rules above them and compares the decisions with the part
// after "-- decisions --" (go test -update rewrites that part).
//
// A file is rules as in gateway.toml, then after "-- requests --" one
// request per line:
//
//	METHOD PATH IDENTITY WANT [host=HOST] [from=IP]
//
// IDENTITY is "-" (none), openid:scope or openid/unionid:scope; WANT is the
// outcome/route the request must get (or bad_path), checked before the
// golden part so that -update cannot bless a bypass. HOST defaults to
// app.example.com; IP to none. Lines that are empty or start with # are
// copied.
func TestDecideGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "decide", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/decide/*.txt (%v)", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, golden, _ := strings.Cut(string(src), decisionsLine)
			got := decideFile(t, file, input)
			if *update {
				if err := os.WriteFile(file, []byte(input+decisionsLine+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if golden == "" {
				t.Fatalf("%s: no %q part (run go test -update to write it)", file, strings.TrimSpace(decisionsLine))
			}
			if diff := cmp.Diff(golden, got); diff != "" {
				t.Errorf("decisions differ from %s (-want +got):\n%s", file, diff)
			}
		})
	}
}

// decideFile decides the requests of one file's input part and returns the
// decisions part.
func decideFile(t *testing.T, file, input string) string {
	t.Helper()
	rulesTOML, requests, ok := strings.Cut(input, requestsLine)
	if !ok {
		t.Fatalf("%s: no %q line", file, strings.TrimSpace(requestsLine))
	}
	var conf struct {
		Policy Config `toml:"policy"`
		Routes []Rule `toml:"route"`
	}
	if _, err := toml.Decode(rulesTOML, &conf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	e, err := New(conf.Routes, conf.Policy)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out bytes.Buffer
	for n, line := range strings.Split(strings.TrimSuffix(requests, "\n"), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		req, want := parseRequest(t, fmt.Sprintf("%s:%d", file, n+1), line)
		fmt.Fprintf(&out, "%s\n", req)
		got := "bad_path"
		p, err := ParsePath(req.path)
		if err != nil {
			fmt.Fprintf(&out, "\t%v\n", err)
		} else {
			d := e.Decide(req.method, req.host, p, req.from, req.id)
			got = d.Outcome.String() + "/" + d.Rule.Name
			fmt.Fprintf(&out, "\t%s by %s on the %s reading %s\n", d.Outcome, d.Rule.Name, d.Reading, d.Path)
			if req.id != nil {
				rt := e.Route(req.method, req.host, p, req.from)
				anon := rt.Decide(nil)
				fmt.Fprintf(&out, "\twithout identity: %s by %s\n", anon.Outcome, anon.Rule.Name)
				checkAnonymous(t, req, &rt, anon)
			}
			fmt.Fprintf(&out, "\tforward %s to %s\n", p.Forward, d.Rule.Upstream)
		}
		if got != want {
			t.Errorf("Decide(%s) = %s, want %s", req, got, want)
		}
	}
	return out.String()
}

// checkAnonymous checks what a gateway relies on to skip the caller: a
// decision without identity that is not NeedLogin is every caller's.
func checkAnonymous(t *testing.T, req request, rt *Route, anon Decision) {
	t.Helper()
	if anon.Outcome == NeedLogin || anon.Outcome == NeedScope {
		if anon.Outcome == NeedScope {
			t.Errorf("Route(%s).Decide(nil) = need_scope: only an identity has a scope", req)
		}
		return
	}
	for _, id := range []*Identity{req.id, {OpenID: "oSomeone", Scope: Base}, {OpenID: "oSomeone", Scope: Userinfo}} {
		d := rt.Decide(id)
		if d.Outcome != anon.Outcome || anon.Outcome == Allow && d.Rule != anon.Rule {
			t.Errorf("Route(%s).Decide(%+v) = %s by %s, but without identity %s by %s: the caller mattered",
				req, *id, d.Outcome, d.Rule.Name, anon.Outcome, anon.Rule.Name)
		}
	}
}

// request is one request line of a testdata/decide file.
type request struct {
	method, path, host string
	from               netip.Addr
	id                 *Identity
	who                string // IDENTITY as written
}

func (r request) String() string {
	s := r.method + " " + r.path + " " + r.who
	if r.host != "app.example.com" {
		s += " host=" + r.host
	}
	if r.from.IsValid() {
		s += " from=" + r.from.String()
	}
	return s
}

func parseRequest(t *testing.T, where, line string) (request, string) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < 4 {
		t.Fatalf("%s: want METHOD PATH IDENTITY WANT [host=HOST] [from=IP], got %q", where, line)
	}
	r := request{method: f[0], path: f[1], who: f[2], host: "app.example.com"}
	if r.who != "-" {
		ids, scope, _ := strings.Cut(r.who, ":")
		openid, unionid, _ := strings.Cut(ids, "/")
		r.id = &Identity{OpenID: openid, UnionID: unionid, Scope: scope}
	}
	for _, opt := range f[4:] {
		switch k, v, _ := strings.Cut(opt, "="); k {
		case "host":
			r.host = v
		case "from":
			a, err := netip.ParseAddr(v)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			r.from = a
		default:
			t.Fatalf("%s: unknown option %q", where, opt)
		}
	}
	return r, f[3]
}

// TestDecideFoldsOnlyWhenNeeded checks the flag that lets Decide skip the
// case-folded pass: a rule with upper case folds even lower-case paths.
func TestDecideFoldsOnlyWhenNeeded(t *testing.T) {
	tests := []struct {
		name, pattern, path string
		want                Outcome
	}{
		{"lower rule, upper path", "/secret/**", "/SECRET/x", Forbidden},
		{"upper rule, lower path", "/Secret/**", "/secret/x", Forbidden},
		{"upper regex class, lower path", `/\Secret`, "/+ecret", Forbidden},
		{"lower rule, other path", "/secret/**", "/public/x", Allow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rule := Rule{Name: "deny", Path: tc.pattern, Action: Deny}
			if strings.Contains(tc.pattern, `\`) {
				rule.Path, rule.PathRegex = "", tc.pattern
			}
			e, err := New([]Rule{rule}, Config{Default: Public})
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePath(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if d := e.Decide("GET", "h", p, netip.Addr{}, nil); d.Outcome != tc.want {
				t.Errorf("Decide(%s) with rule %s = %s on %s, want %s", tc.path, tc.pattern, d.Outcome, d.Reading, tc.want)
			}
		})
	}
}

func TestDecideZeroPathIsRoot(t *testing.T) {
	e := testEngine(t)
	if d := e.Decide("GET", "h", Path{}, netip.Addr{}, nil); d.Path != "/" || d.Rule.Name != "default" {
		t.Errorf("Decide(zero Path) = %s by %s on %q, want the default rule on /", d.Outcome, d.Rule.Name, d.Path)
	}
}

// TestDecidePlainAllocs pins the cost of the common case: a plain path is
// parsed, routed and decided, first without identity and then with one,
// without allocating.
func TestDecidePlainAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	e := testEngine(t)
	id := &Identity{OpenID: "o1", Scope: Base}
	raw := strings.Clone("/orders/7")
	got := testing.AllocsPerRun(1000, func() {
		p, err := ParsePath(raw)
		if err != nil {
			t.Fatal(err)
		}
		rt := e.Route("GET", "app.example.com", p, netip.Addr{})
		if d := rt.Decide(nil); d.Outcome != NeedLogin {
			t.Fatalf("Route(%s).Decide(nil) = %s", raw, d.Outcome)
		}
		if d := rt.Decide(id); d.Outcome != Allow {
			t.Fatalf("Route(%s).Decide(id) = %s", raw, d.Outcome)
		}
	})
	if got != 0 {
		t.Errorf("ParsePath+Route+Decide(%s) allocates %v times, want 0", raw, got)
	}
}

func BenchmarkDecide(b *testing.B) {
	e := testEngine(b)
	id := &Identity{OpenID: "o1", Scope: Base}
	for _, bc := range []struct{ name, path string }{
		{"plain", "/orders/7"},
		{"plain-upper", "/Orders/7"},
		{"escaped", "/public/%E5%BE%AE%20x"},
		{"hostile", "/public/..;/Admin.%20/x%3B;y/..%2fz"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := ParsePath(bc.path)
				if err != nil {
					b.Fatal(err)
				}
				rt := e.Route("GET", "app.example.com", p, netip.Addr{})
				if d := rt.Decide(nil); d.Outcome == NeedLogin {
					rt.Decide(id)
				}
			}
		})
	}
}
