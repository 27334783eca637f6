package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
)

// good is a minimal valid config.
const good = `
[server]
public_url = "https://app.example.com"
[wechat.official_account]
appid = "wx1234567890abcdef"
secret_env = "WXGATE_TEST_CHECK_SECRET"
[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"
[[route]]
name = "admin"
path = "/admin/**"
scope = "userinfo"
`

func runCheck(t *testing.T, conf string, extra ...string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(append([]string{"check", "--config", path}, extra...), &out, &errb)
	return code, out.String() + errb.String()
}

func TestCheck(t *testing.T) {
	t.Setenv("WXGATE_TEST_CHECK_SECRET", "s3cret-value")
	tests := []struct {
		name  string
		conf  string
		code  int
		lines []string // each must appear, one per problem
	}{
		{"good", good, 0, []string{"ok"}},
		{"misspelt key", strings.Replace(good, "public_url", "publc_url", 1), 1,
			[]string{"unknown key server.publc_url"}},
		{"unknown section key", good + "\n[session]\nttl = \"1h\"\nidle = \"1h\"\n", 1,
			[]string{"unknown key session.idle"}},
		{"unknown route key", good + "\n[[route]]\nname = \"x\"\nacton = \"deny\"\n", 1,
			[]string{"unknown key route[1] (x).acton (did you mean action?)"}},
		{"bad toml", good + "\n[server\n", 1, []string{"gateway.toml"}},
		{"many problems", `
[server]
public_url = "ftp://x/y"
prefix = "nope/"
trusted_proxies = ["10.0.0.0/99"]
log_level = "loud"
[session]
store = "disk"
ttl = "10s"
[wechat.official_account]
appid = "abc"
secret_env = "WXGATE_TEST_CHECK_UNSET"
[[upstream]]
name = "app"
url = "app:3000"
[[route]]
name = "r"
path = "admin"
action = "allow"
upstream = "ghost"
`, 1, []string{
			`server.public_url: "ftp://x/y"`,
			`server.prefix: "nope/"`,
			`server.trusted_proxies: "10.0.0.0/99"`,
			`server.log_level:`,
			`session.store: "disk"`,
			`session.ttl: 10s`,
			`wechat.official_account.appid: "abc"`,
			`wechat.official_account.secret_env: environment variable WXGATE_TEST_CHECK_UNSET is empty or unset`,
			`upstream[0] (app).url: "app:3000"`,
			`route[0] (r).path: "admin" must start with /`,
			`route[0] (r).action: "allow"`,
			`route[0] (r).upstream: no [[upstream]] named "ghost"`,
		}},
		{"no app no upstream", "[server]\npublic_url = \"http://localhost:8080\"\n", 1,
			[]string{"wechat: no app configured", "upstream: at least one"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCheck(t, tc.conf)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, l := range tc.lines {
				if !strings.Contains(out, l) {
					t.Errorf("output lacks %q:\n%s", l, out)
				}
			}
			if strings.Contains(out, "s3cret-value") {
				t.Error("check printed a secret")
			}
			if tc.code != 0 {
				if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n < len(tc.lines) {
					t.Errorf("%d lines for %d problems:\n%s", n, len(tc.lines), out)
				}
			}
		})
	}
}

// TestCheckWritesNothing: check reads a config, never what a start
// writes. The signing key it names is not created, and the memory store's
// snapshot is not consumed (a start removes it as it reads it, issue 8):
// checking a config before a restart must not lose the sessions the last
// graceful stop saved.
func TestCheckWritesNothing(t *testing.T) {
	t.Setenv("WXGATE_TEST_CHECK_SECRET", "s3cret-value")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing-key.pem")
	snapshot := filepath.Join(dir, "sessions.snapshot")
	m := session.NewMemory(0)
	if err := m.Set(t.Context(), "k", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SaveSnapshot(snapshot, session.OriginServe); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	conf := good + fmt.Sprintf("[session]\nsnapshot_file = %q\n[tokens]\nsigning_key_file = %q\n", snapshot, keyFile)
	for _, args := range [][]string{nil, {"--explain", "GET https://app.example.com/admin/x"}} {
		if code, out := runCheck(t, conf, args...); code != 0 {
			t.Fatalf("check %v: exit %d, want 0\n%s", args, code, out)
		}
		if _, err := os.Stat(keyFile); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("check %v: stat of the signing key file = %v, want it not created", args, err)
		}
		if b, err := os.ReadFile(snapshot); err != nil || !bytes.Equal(b, saved) {
			t.Errorf("check %v: the snapshot after = %d bytes, %v; want it as saved (%d bytes)", args, len(b), err, len(saved))
		}
	}
}

func TestCheckEnvOverride(t *testing.T) {
	t.Setenv("WXGATE_TEST_CHECK_SECRET", "x")
	t.Setenv("WXGATE_SERVER_PUBLIC_URL", "not a url")
	code, out := runCheck(t, good)
	if code != 1 || !strings.Contains(out, `server.public_url: "not a url"`) {
		t.Errorf("env override not applied: exit %d\n%s", code, out)
	}
	t.Setenv("WXGATE_SERVER_PUBLIC_URL", "https://other.example.com")
	t.Setenv("WXGATE_SESSION_TTL", "forever")
	code, out = runCheck(t, good)
	if code != 1 || !strings.Contains(out, "WXGATE_SESSION_TTL") {
		t.Errorf("bad env value: exit %d\n%s", code, out)
	}
}

func TestCheckExplain(t *testing.T) {
	t.Setenv("WXGATE_TEST_CHECK_SECRET", "x")
	withHost := strings.Replace(good, "name = \"admin\"\n", "name = \"admin\"\nhost = \"app.example.com\"\n", 1)
	withDeny := good + "[[route]]\nname = \"secret\"\npath = \"/secret/**\"\naction = \"deny\"\n"
	tests := []struct {
		name, conf, request string
		want                []string // each must appear
		not                 []string // none may appear
	}{
		{"route", good, "GET https://app.example.com/admin/../admin/users",
			[]string{`route "admin"`, "scope=userinfo", "normalized path /admin/users"}, []string{"reading", "once logged in"}},
		{"default", good, "POST https://app.example.com/other", []string{"[policy] default"}, nil},
		{"host with trailing dot", withHost, "GET https://App.example.com.:8443/admin/x", []string{`route "admin" (host app.example.com`}, nil},
		{"deny by case", withDeny, "GET https://app.example.com/SECRET/x",
			[]string{`route "secret"`, "action=deny", "on the case-folded reading of the path, /SECRET/x"}, []string{"once logged in"}},
		{"scope once logged in", good, "GET https://app.example.com/x/..;/admin/users", []string{
			"forwarded as /x/..;/admin/users",
			"decided by no route matched",
			`once logged in (base scope, on no allow list): need_scope by route "admin"`,
			"on the params-removed reading of the path, /admin/users",
		}, nil},
		{"encoded delimiter stays encoded", good, "GET https://app.example.com/a%3bb", []string{"normalized path /a;b, forwarded as /a%3Bb"}, nil},
		{"refused", good, "GET https://app.example.com/..;/admin", []string{"refused with 400", "climb above the root"}, nil},
		// A browser asks for "/" when the URL has no path.
		{"no path", good, "GET https://app.example.com", []string{"normalized path /, forwarded as /"}, []string{"refused"}},
		{"no path, a query", good, "GET https://app.example.com?x=1", []string{"normalized path /, forwarded as /"}, []string{"refused"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCheck(t, tc.conf, "--explain", tc.request)
			if code != 0 {
				t.Errorf("check --explain %q: exit %d, want 0\n%s", tc.request, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("check --explain %q = %s, want it to contain %q", tc.request, out, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("check --explain %q = %s, want no %q", tc.request, out, n)
				}
			}
		})
	}
}

// TestCheckExplainCaller: --ip decides routes with networks for that
// client, and --openid/--unionid (with --scope) show the decision for that
// caller, allow lists included (issue 11).
func TestCheckExplainCaller(t *testing.T) {
	t.Setenv("WXGATE_TEST_CHECK_SECRET", "x")
	conf := good + "[[route]]\nname = \"office\"\npath = \"/office/**\"\nnetworks = [\"10.0.0.0/8\"]\naction = \"public\"\n" +
		"[[route]]\nname = \"office-rest\"\npath = \"/office/**\"\naction = \"deny\"\n" +
		"[[route]]\nname = \"vip\"\npath = \"/vip/**\"\nallow_openids = [\"o-boss\"]\n"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"inside the network", []string{"--explain", "GET https://app.example.com/office/a", "--ip", "10.1.2.3"},
			[]string{"from 10.1.2.3", `decided by route "office"`}},
		{"outside the network", []string{"--explain", "GET https://app.example.com/office/a", "--ip", "192.0.2.7"},
			[]string{"from 192.0.2.7", `decided by route "office-rest"`}},
		{"on the allow list", []string{"--explain", "GET https://app.example.com/vip/x", "--openid", "o-boss"},
			[]string{`for openid "o-boss", unionid "" (base scope): allow by route "vip"`}},
		{"not on it", []string{"--explain", "GET https://app.example.com/vip/x", "--openid", "o-other"},
			[]string{`for openid "o-other", unionid "" (base scope): forbidden by route "vip"`}},
		{"scope", []string{"--explain", "GET https://app.example.com/admin/x", "--openid", "o-1", "--scope", "userinfo"},
			[]string{`(userinfo scope): allow by route "admin"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCheck(t, conf, tc.args...)
			if code != 0 {
				t.Fatalf("check %v: exit %d\n%s", tc.args, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("check %v = %s, want it to contain %q", tc.args, out, w)
				}
			}
		})
	}
	for _, bad := range [][]string{{"--ip", "not-an-ip"}, {"--scope", "admin"}} {
		if code, _ := runCheck(t, conf, append([]string{"--explain", "GET https://app.example.com/x"}, bad...)...); code != 2 {
			t.Errorf("check %v: exit %d, want 2", bad, code)
		}
	}
}

// TestShippedConfig checks that gateway.toml as shipped is valid once its
// secrets exist, documents every key it sets, and runs in dev as is.
func TestShippedConfig(t *testing.T) {
	for _, v := range []string{"WXGATE_OA_SECRET", "WXGATE_WEBSITE_SECRET", "WXGATE_MINIPROGRAM_SECRET", "WXGATE_APP_SECRET"} {
		t.Setenv(v, "x")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", "../../gateway.toml"}, &out, &errb); code != 0 {
		t.Fatalf("shipped gateway.toml: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

func TestKeygen(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("keygen: exit %d\n%s%s", code, out.String(), errb.String())
	}
	path := filepath.Join(t.TempDir(), "keys.pem")
	for i, alg := range []string{"ES256", "EdDSA", "RS256"} {
		errb.Reset()
		if code := run([]string{"keygen", "--alg", alg, "--out", path}, &out, &errb); code != 0 {
			t.Fatalf("keygen --alg %s: exit %d: %s", alg, code, errb.String())
		}
		// What to do next depends on whether the file is new.
		msg := errb.String()
		if i == 0 && (!strings.HasPrefix(msg, "wrote a new ES256 key, kid ") || !strings.Contains(msg, "signing_key_file = ") || strings.Contains(msg, "move")) {
			t.Errorf("keygen into a new file said %q", msg)
		}
		if i > 0 && (!strings.HasPrefix(msg, "appended a new "+alg+" key, kid ") || !strings.Contains(msg, fmt.Sprintf("now %d keys", i+1)) || !strings.Contains(msg, "move the new key first")) {
			t.Errorf("keygen appending key %d said %q", i+1, msg)
		}
	}
	b, _ := os.ReadFile(path)
	ks, err := session.ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Algorithm() != "ES256" || strings.Count(string(ks.JWKS()), `"kid"`) != 3 {
		t.Errorf("after three keygens: signer %s, JWKS %s", ks.Algorithm(), ks.JWKS())
	}
	// Each key's Kid header is its kid in the JWKS, and what keygen said.
	kids, err := session.KeyIDs(b)
	if err != nil || len(kids) != 3 {
		t.Fatalf("KeyIDs: %v, %v", kids, err)
	}
	for _, kid := range kids {
		if !strings.Contains(string(b), "Kid: "+kid+"\n") || !strings.Contains(string(ks.JWKS()), `"kid":"`+kid+`"`) {
			t.Errorf("kid %s: not both in a PEM header and the JWKS:\n%s\n%s", kid, b, ks.JWKS())
		}
	}
	if !strings.Contains(errb.String(), "kid "+kids[2]+",") {
		t.Errorf("keygen named another kid than the key's: %q, want %s", errb.String(), kids[2])
	}
	if code := run([]string{"keygen", "--alg", "HS256"}, &out, &errb); code != 2 {
		t.Errorf("keygen --alg HS256: exit %d, want 2", code)
	}
}

// An existing key file that an editor or a secret store left without its
// last newline, or with a note after the key, still reads as the old keys
// plus the new one after keygen --out; and keygen puts no private key in a
// file others can read.
func TestKeygenAppendKeepsTheFileValid(t *testing.T) {
	first, err := session.GenerateKey(session.ES256)
	if err != nil {
		t.Fatal(err)
	}
	trimmed := bytes.TrimRight(first, "\n")
	for _, tc := range []struct {
		name     string
		existing []byte
		mode     os.FileMode
		wantCode int
		wantKeys int
	}{
		{"ends with a newline", first, 0o600, 0, 2},
		{"no newline at the end", trimmed, 0o600, 0, 2},
		{"a note after the key, no newline", append(append([]byte{}, first...), "# rotated in May"...), 0o600, 0, 2},
		{"readable by others", first, 0o644, 1, 1},
		{"empty, readable by the group", nil, 0o640, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.pem")
			if err := os.WriteFile(path, tc.existing, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if code := run([]string{"keygen", "--out", path}, &out, &errb); code != tc.wantCode {
				t.Fatalf("exit %d, want %d: %s", code, tc.wantCode, errb.String())
			}
			b, _ := os.ReadFile(path)
			if tc.wantKeys == 0 {
				if len(b) != 0 {
					t.Fatalf("a private key went into a file others can read:\n%s", b)
				}
				return
			}
			kids, err := session.KeyIDs(b)
			if err != nil || len(kids) != tc.wantKeys {
				t.Fatalf("after keygen the file holds %d keys (%v), want %d:\n%s", len(kids), err, tc.wantKeys, b)
			}
			want, _ := session.KeyIDs(first)
			if kids[0] != want[0] {
				t.Errorf("the signing key changed: %s, want %s", kids[0], want[0])
			}
		})
	}
}
