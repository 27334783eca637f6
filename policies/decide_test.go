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

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the code does")

// TestDecideGolden decides each request of testdata/decide.input and
// compares the decisions with testdata/decide.golden.
func TestDecideGolden(t *testing.T) {
	input := filepath.Join("testdata", "decide.input")
	src, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	rulesTOML, requests, ok := strings.Cut(string(src), "-- requests --\n")
	if !ok {
		t.Fatalf("%s: no -- requests -- line", input)
	}
	var conf struct {
		Policy Config `toml:"policy"`
		Routes []Rule `toml:"route"`
	}
	if _, err := toml.Decode(rulesTOML, &conf); err != nil {
		t.Fatalf("%s: %v", input, err)
	}
	e, err := New(conf.Routes, conf.Policy)
	if err != nil {
		t.Fatalf("%s: %v", input, err)
	}

	var out bytes.Buffer
	for n, line := range strings.Split(requests, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("%s: request %d: want METHOD PATH IDENTITY WANT, got %q", input, n+1, line)
		}
		method, raw, who, want := f[0], f[1], f[2], f[3]
		var id *Identity
		if who != "-" {
			openid, scope, _ := strings.Cut(who, ":")
			id = &Identity{OpenID: openid, Scope: scope}
		}
		got := "bad_path"
		fmt.Fprintf(&out, "%s %s %s\n", method, raw, who)
		p, err := ParsePath(raw)
		if err != nil {
			fmt.Fprintf(&out, "\t%v\n", err)
		} else {
			d := e.Decide(method, "app.example.com", p, netip.Addr{}, id)
			got = d.Outcome.String() + "/" + d.Rule.Name
			fmt.Fprintf(&out, "\t%s by %s on the %s reading %s\n\tforward %s\n", d.Outcome, d.Rule.Name, d.Reading, d.Path, p.Forward)
		}
		if got != want {
			t.Errorf("Decide(%s %s, %s) = %s, want %s", method, raw, who, got, want)
		}
	}

	golden := filepath.Join("testdata", "decide.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), out.String()); diff != "" {
		t.Errorf("decisions differ from %s (-want +got):\n%s", golden, diff)
	}
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
// parsed and decided without allocating.
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
		if d := e.Decide("GET", "app.example.com", p, netip.Addr{}, id); d.Outcome != Allow {
			t.Fatalf("Decide(%s) = %s", raw, d.Outcome)
		}
	})
	if got != 0 {
		t.Errorf("ParsePath+Decide(%s) allocates %v times, want 0", raw, got)
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
				e.Decide("GET", "app.example.com", p, netip.Addr{}, id)
			}
		})
	}
}
