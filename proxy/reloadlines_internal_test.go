package proxy

import (
	"errors"
	"testing"
)

// TestScanKeyLines: keys are found on their lines past values that span
// lines or hold the characters that delimit keys and tables.
func TestScanKeyLines(t *testing.T) {
	src := `# a comment = not a key
[server]
listen = "127.0.0.1:8080" # [not.a.table]
allowed_redirect_hosts = [
  "a.example",  # ]
  "[b]",
]
public_url = "http://x"

[ wechat . "official_account" ]
appid = 'wx1'
note = """
[[route]]
name = "inside a string"
"""

[[route]]
name = "first"
path = "/a=b/**"

[[route]]
name = "second"
networks = [ "10.0.0.0/8",
  "192.168.0.0/16" ]
upstream = "x"
"tricky.key" = 1
`
	kl := scanKeyLines([]byte(src))
	for key, want := range map[string]int{
		"server":                        2,
		"server.listen":                 3,
		"server.allowed_redirect_hosts": 4,
		"server.public_url":             8,
		"wechat.official_account":       10,
		"wechat.official_account.appid": 11,
		"route[0]":                      17,
		"route[0].name":                 18,
		"route[0].path":                 19,
		"route[1].name":                 22,
		"route[1].upstream":             25,
		"route[1].tricky.key":           26,
		// Not set: its table.
		"route[1].action":       21,
		"server.admin_listen":   2,
		"not.a.table":           0,
		"":                      0,
		"route.upstream":        25, // the decoder's unknown keys carry no index
		"wechat.website.secret": 0,
	} {
		if got := kl.find(key); got != want {
			t.Errorf("find(%q) = %d, want %d", key, got, want)
		}
	}
	if _, ok := kl.exact["route[2]"]; ok {
		t.Error("a [[route]] inside a multi-line string was counted")
	}
}

// TestPlace: each line of a joined error becomes one problem, placed by
// the key it names.
func TestPlace(t *testing.T) {
	src := []byte("[server]\nlisten = \":1\"\n\n[[route]]\nname = \"a b\"\nupstream = \"nope\"\n")
	err := errors.Join(
		errors.New(`route[0] (a b).upstream: no [[upstream]] named "nope"`),
		errors.New("gw.toml: unknown key server.lisen"),
		errors.New("WXGATE_SERVER_LISTEN: bad"),
		errors.New("server.listen: changed; that takes a restart"),
	)
	got := place("gw.toml", src, err)
	want := []string{
		`gw.toml:6: route[0] (a b).upstream: no [[upstream]] named "nope"`,
		"gw.toml:1: unknown key server.lisen",
		"gw.toml: WXGATE_SERVER_LISTEN: bad",
		"gw.toml:2: server.listen: changed; that takes a restart",
	}
	if len(got) != len(want) {
		t.Fatalf("place: %d problems, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if s := got[i].String("gw.toml"); s != want[i] {
			t.Errorf("problem %d: %q, want %q", i, s, want[i])
		}
	}
}

// TestIndexedDecodeKey: a value the decoder refuses is named by the
// decoder without the array index; the problem names the element the line
// is in, with its name, as Validate's problems do.
func TestIndexedDecodeKey(t *testing.T) {
	src := []byte(`[server]
listen = ":8080"

[[upstream]]
name = "app" # the app
url = "http://127.0.0.1:3000"

[[upstream]]
url = "http://127.0.0.1:3001"
timeout = "30 seconds"

[[route]]
path = "/a/**"
name = 'first'
api = "yes"

[policy]
api = "no"
`)
	kl := scanKeyLines(src)
	for _, tc := range []struct {
		key  string
		line int
		want string
	}{
		{"server.listen", 2, "server.listen"},
		{"upstream.url", 6, "upstream[0] (app).url"},
		{"upstream.timeout", 10, "upstream[1].timeout"}, // no name
		{"route.api", 15, "route[0] (first).api"},
		{"policy.api", 18, "policy.api"},
		{"upstream.timeout", 2, "upstream.timeout"}, // before any [[upstream]]
	} {
		if got := kl.indexed(tc.key, tc.line); got != tc.want {
			t.Errorf("indexed(%q, line %d) = %q, want %q", tc.key, tc.line, got, tc.want)
		}
	}
}

// TestScanEscapedQuotes: an escaped quote in a multi-line basic string
// closes nothing, so a table header inside the string is no table: the
// scanner took """a\""" for a whole string and named the decoder's
// refusal after the line below as an element that does not exist.
func TestScanEscapedQuotes(t *testing.T) {
	src := []byte(`[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"
notes = """says \"""
[[upstream]]
name = "ghost"
"""
timeout = "soon"
`)
	if got, want := scanKeyLines(src).indexed("upstream.timeout", 8), "upstream[0] (app).timeout"; got != want {
		t.Errorf("indexed = %q, want %q", got, want)
	}
}

// TestTomlStringName: a name's '#' or escaped quote is part of it; the
// comment after it is not. A name with '#' was dropped from problems.
func TestTomlStringName(t *testing.T) {
	for _, tc := range []struct {
		v, want string
		ok      bool
	}{
		{` "vip#1" # the VIP route`, "vip#1", true},
		{` 'vip#1' # the VIP route`, "vip#1", true},
		{` "say \"hi\" #2"`, `say "hi" #2`, true},
		{` "app"`, "app", true},
		{` """app"""`, "", false},
		{` "unclosed`, "", false},
		{` 42`, "", false},
	} {
		if got, ok := tomlString(tc.v); got != tc.want || ok != tc.ok {
			t.Errorf("tomlString(%q) = %q, %v; want %q, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}
