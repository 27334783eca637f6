package proxy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/session"
)

const checkConf = `[server]
public_url = "https://app.example.com"
admin_token_env = "WXGATE_ADMIN_TOKEN"

[wechat.official_account]
appid = "wx1234567890abcdef"
secret_env = "WXGATE_OA_SECRET"

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"
`

// check writes conf and runs proxy.Check on it with env, returning its
// lines and whether it accepted the config.
func check(t *testing.T, conf string, env ...string) ([]string, bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gw.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Provision reads the secrets from the process's environment; Env
	// holds the overrides.
	t.Setenv("WXGATE_OA_SECRET", "oa-s3cret")
	t.Setenv("WXGATE_ADMIN_TOKEN", "admin-s3cret-0123456789")
	base := []string{"WXGATE_OA_SECRET=oa-s3cret", "WXGATE_ADMIN_TOKEN=admin-s3cret-0123456789"}
	cfg, problems := proxy.Check(path, proxy.CheckOptions{Env: append(base, env...)})
	var lines []string
	for _, p := range problems {
		lines = append(lines, strings.TrimPrefix(p.String(), path))
	}
	return lines, cfg != nil
}

// TestCheckEnv: a WXGATE_* variable that sets no key is a problem naming
// the nearest one, unless the config names it (secret_env,
// admin_token_env), the test suite reads it, or Kubernetes sets it for a
// Service named wxgate; values from variables are validated like the
// file's, and their problems name the variable, not a line of the file.
func TestCheckEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string // "" for accepted with no line
	}{
		{"named by the config", nil, nil},
		{"kubernetes service links", []string{"WXGATE_SERVICE_HOST=10.0.0.1", "WXGATE_SERVICE_PORT=8080", "WXGATE_SERVICE_PORT_HTTP=8080", "WXGATE_PORT=tcp://10.0.0.1:8080", "WXGATE_PORT_8080_TCP_ADDR=10.0.0.1", "WXGATE_REQUIRE_REDIS=1", "WXGATE_ARTIFACTS=/tmp"}, nil},
		{"misspelt", []string{"WXGATE_SERVER_LISTN=:1"}, []string{": WXGATE_SERVER_LISTN: sets no key (did you mean WXGATE_SERVER_LISTEN?)"}},
		// A Service named wxgate-staging (a kustomize nameSuffix) or
		// wxgate-redis in the namespace, with a cluster IP.
		{"kubernetes service links of other wxgate-* services", []string{"WXGATE_STAGING_SERVICE_HOST=10.0.0.2", "WXGATE_STAGING_SERVICE_PORT=8080", "WXGATE_STAGING_SERVICE_PORT_HTTP=8080",
			"WXGATE_STAGING_PORT=tcp://10.0.0.2:8080", "WXGATE_STAGING_PORT_8080_TCP=tcp://10.0.0.2:8080", "WXGATE_STAGING_PORT_8080_TCP_PROTO=tcp",
			"WXGATE_STAGING_PORT_8080_TCP_PORT=8080", "WXGATE_STAGING_PORT_8080_TCP_ADDR=10.0.0.2", "WXGATE_REDIS_PORT=tcp://10.0.0.3:6379", "WXGATE_REDIS_SERVICE_PORT_REDIS=6379"}, nil},
		{"a port that is no service link", []string{"WXGATE_SERVER_PORT=80"}, []string{": WXGATE_SERVER_PORT: sets no key"}},
		{"a section left out", []string{"WXGATE_LOG_LEVEL=debug"}, []string{": WXGATE_LOG_LEVEL: sets no key (did you mean WXGATE_SERVER_LOG_LEVEL?)"}},
		{"nothing near", []string{"WXGATE_FROBNICATE=1"}, []string{": WXGATE_FROBNICATE: sets no key (WXGATE_<SECTION>_<KEY>, as WXGATE_SERVER_LISTEN)"}},
		{"a secret the config does not name", []string{"WXGATE_WEBSITE_SECRET=x"}, []string{": WXGATE_WEBSITE_SECRET: sets no key"}},
		{"listen not an address", []string{"WXGATE_SERVER_LISTEN=oops"}, []string{`: server.listen: "oops" is not host:port (":8080", "127.0.0.1:9090") (set by WXGATE_SERVER_LISTEN)`}},
		{"listen without a port", []string{"WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:"}, []string{`: server.admin_listen: "127.0.0.1:" is not host:port`}},
		{"listen port out of range", []string{"WXGATE_SERVER_LISTEN=:99999"}, []string{`: server.listen: ":99999" is not host:port`}},
		{"bad duration", []string{"WXGATE_SESSION_TTL=a week"}, []string{`: WXGATE_SESSION_TTL (session.ttl): time: invalid duration "a week"`}},
		{"bad value and unknown name together", []string{"WXGATE_SERVER_PUBLIC_URL=ftp://x", "WXGATE_SESION_TTL=1h"},
			[]string{": WXGATE_SESION_TTL: sets no key (did you mean WXGATE_SESSION_TTL?)", `: server.public_url: "ftp://x" must be http(s)://host[:port] with no path (set by WXGATE_SERVER_PUBLIC_URL)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, ok := check(t, checkConf, tc.env...)
			if ok != (len(tc.want) == 0) {
				t.Errorf("accepted = %v, want %v: %q", ok, len(tc.want) == 0, lines)
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("lines %q, want %q", lines, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
				}
			}
		})
	}
}

// TestCheckSuggests: a misspelt key names the nearest known one, in its
// table or another, on the line that sets it; a key nothing resembles
// gets no guess.
func TestCheckSuggests(t *testing.T) {
	for _, tc := range []struct{ add, want string }{
		{"[session]\nidel_ttl = \"1h\"\n", ":14: unknown key session.idel_ttl (did you mean idle_ttl?)"},
		{"[session]\nttl = \"1h\"\nrefresh_margn = \"1m\"\n", ":15: unknown key session.refresh_margn (did you mean refresh_margin?)"},
		{"[tokens]\nidle_ttl = \"1h\"\n", ":14: unknown key tokens.idle_ttl (did you mean session.idle_ttl?)"},
		{"[sesion]\nttl = \"1h\"\n", ":13: unknown key sesion (did you mean session?)"},
		{"[[route]]\nname = \"a\"\npath = \"/a\"\nupstrem = \"app\"\n", ":16: unknown key route[0] (a).upstrem (did you mean upstream?)"},
		{"[session]\nzzzzzzzz = 1\n", ":14: unknown key session.zzzzzzzz\n"},
		// [log] has no level: the key it ends is [server]'s.
		{"[log]\nlevel = \"debug\"\n", ":14: unknown key log.level (did you mean server.log_level?)"},
	} {
		lines, ok := check(t, checkConf+"\n"+tc.add)
		if ok || len(lines) != 1 || lines[0]+"\n" != tc.want && lines[0] != tc.want {
			t.Errorf("with %q: %q (accepted %v), want %q", tc.add, lines, ok, tc.want)
		}
	}
}

// TestCheckUnsetSecrets: an unset secret variable is a warning with
// UnsetSecretsWarn and a problem without it; a secret set but too short,
// or a missing secret file, stays a problem either way.
func TestCheckUnsetSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.toml")
	conf := strings.Replace(checkConf, "[wechat.official_account]", "[wechat.website]\nappid = \"wx2234567890abcdef\"\nsecret_file = \"missing.secret\"\n\n[wechat.official_account]", 1)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WXGATE_OA_SECRET", "")
	t.Setenv("WXGATE_ADMIN_TOKEN", "short")
	for _, warn := range []bool{true, false} {
		cfg, problems := proxy.Check(path, proxy.CheckOptions{UnsetSecretsWarn: warn})
		if cfg != nil {
			t.Errorf("warn %v: accepted with a missing secret file and a short admin token", warn)
		}
		got := map[string]bool{}
		for _, p := range problems {
			got[p.Text[:strings.Index(p.Text, ":")]] = p.Warning
		}
		want := map[string]bool{"wechat.official_account.secret_env": warn, "wechat.website.secret_file": false, "server.admin_token_env": false}
		for k, w := range want {
			if g, ok := got[k]; !ok || g != w {
				t.Errorf("warn %v: %s present %v, warning %v; want a warning: %v (%v)", warn, k, ok, g, w, problems)
			}
		}
	}
	t.Setenv("WXGATE_ADMIN_TOKEN", "")
	cfg, problems := proxy.Check(path, proxy.CheckOptions{UnsetSecretsWarn: true})
	if cfg != nil || len(problems) != 3 {
		t.Errorf("unset admin token: accepted %v, %v", cfg != nil, problems)
	}
}

// TestCheckRefusesWhatNewRefuses: the signing key file and the memory
// store's snapshot are read only when the gateway starts; a config whose
// existing file New would refuse is refused by Check too, on the key's
// line, and Check neither creates a missing file nor consumes a snapshot.
func TestCheckRefusesWhatNewRefuses(t *testing.T) {
	devKey, err := session.GenerateKey(session.ES256)
	if err != nil {
		t.Fatal(err)
	}
	devKey = bytes.Replace(devKey, []byte("-----BEGIN PRIVATE KEY-----\n"), []byte("-----BEGIN PRIVATE KEY-----\n"+session.OriginHeader+": dev\n"), 1)
	for _, tc := range []struct {
		name      string
		key, snap any // file contents ([]byte), a directory (true), or none (nil)
		want      string
	}{
		{"no files yet", nil, nil, ""},
		{"a key file that holds no key", []byte("not a key\n"), nil, "tokens.signing_key_file: "},
		{"a key file that is a directory", true, nil, "tokens.signing_key_file: "},
		{"a key wxgate dev generated", devKey, nil, "tokens.signing_key_file: "},
		{"a snapshot that is not JSON", nil, []byte("{garbage"), "session.snapshot_file: "},
		{"a snapshot wxgate dev wrote", nil, []byte(`{"format":"wxgate-snapshot/2","origin":"dev","written":"2026-11-23T16:00:00Z","entries":{}}`), "session.snapshot_file: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile, snapFile := filepath.Join(dir, "keys.pem"), filepath.Join(dir, "sessions.snapshot")
			for _, f := range []struct {
				path string
				v    any
			}{{keyFile, tc.key}, {snapFile, tc.snap}} {
				switch v := f.v.(type) {
				case []byte:
					if err := os.WriteFile(f.path, v, 0o600); err != nil {
						t.Fatal(err)
					}
				case bool:
					if err := os.Mkdir(f.path, 0o700); err != nil {
						t.Fatal(err)
					}
				}
			}
			conf := strings.Replace(checkConf, "[wechat.official_account]",
				fmt.Sprintf("[session]\nsnapshot_file = %q\n\n[tokens]\nsigning_key_file = %q\n\n[wechat.official_account]", snapFile, keyFile), 1)
			lines, ok := check(t, conf)
			if tc.want == "" {
				if !ok {
					t.Fatalf("refused: %q", lines)
				}
				if _, err := os.Stat(keyFile); err == nil {
					t.Error("check created the signing key file")
				}
				return
			}
			if ok || len(lines) != 1 || !regexp.MustCompile(`^:\d+: `+tc.want).MatchString(lines[0]) {
				t.Fatalf("got %q (accepted %v), want one problem on a line, %q...", lines, ok, tc.want)
			}
			if b, ok := tc.snap.([]byte); ok {
				if got, err := os.ReadFile(snapFile); err != nil || !bytes.Equal(got, b) {
					t.Errorf("the snapshot changed: %q, %v", got, err)
				}
			}
		})
	}
}

// TestCheckUnitlessDurations: a duration written as a bare number is
// refused in the file, as it is from a WXGATE_* variable: the decoder
// would take "timeout = 5" as 5ns, and every WeChat call would time out.
// 0 needs no unit.
func TestCheckUnitlessDurations(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"wechat timeout", "[wechat.official_account]", "[wechat]\ntimeout = 5\n\n[wechat.official_account]",
			[]string{`:\d+: wechat.timeout: 5 has no unit`}},
		{"an upstream's timeout", "url = \"http://127.0.0.1:3000\"\n", "url = \"http://127.0.0.1:3000\"\ntimeout = 30\n",
			[]string{`:\d+: upstream\[0\] \(app\).timeout: 30 has no unit`}},
		{"a variable's bare number", "", "", nil},
		{"zero", "[server]\n", "[server]\nshutdown_delay = 0\n", nil},
		{"with a unit", "[wechat.official_account]", "[wechat]\ntimeout = \"5s\"\n\n[wechat.official_account]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := strings.Replace(checkConf, tc.from, tc.to, 1)
			var env []string
			if tc.name == "a variable's bare number" {
				env = []string{"WXGATE_WECHAT_TIMEOUT=5"}
				tc.want = []string{`^: WXGATE_WECHAT_TIMEOUT \(wechat.timeout\): time: missing unit`}
			}
			lines, ok := check(t, conf, env...)
			if ok != (len(tc.want) == 0) || len(lines) != len(tc.want) {
				t.Fatalf("got %q (accepted %v), want %q", lines, ok, tc.want)
			}
			for i, w := range tc.want {
				if !regexp.MustCompile(w).MatchString(lines[i]) {
					t.Errorf("line %q, want %q", lines[i], w)
				}
			}
		})
	}
}

// TestCheckShowsInvisibleKeyCharacters: a key misspelt with a look-alike
// or an invisible character (a Cyrillic і, a zero-width space) is shown
// escaped, on its own line, not as the very key it suggests; a route's
// own name stays as written.
func TestCheckShowsInvisibleKeyCharacters(t *testing.T) {
	conf := strings.Replace(checkConf, "[server]\n", "[server]\n\"l\u0456sten\" = \":1\"\n\"pre\u200bfix\" = \"/x\"\n", 1) +
		"\n[[route]]\nname = \"订单\"\npath = \"/o/**\"\n\"act\u0456on\" = \"public\"\n"
	lines, ok := check(t, conf)
	want := []string{
		`:2: unknown key server."l\u0456sten" (did you mean server.listen?)`,
		`:3: unknown key server."pre\u200bfix" (did you mean server.prefix?)`,
		`:18: unknown key route[0] (订单).act\u0456on (did you mean route.action?)`,
	}
	if ok {
		t.Fatalf("accepted: %q", lines)
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, w)
		}
		if !found {
			t.Errorf("no line with %q in %q", w, lines)
		}
	}
}

// TestCheckPlacesTypeErrors: a value of the wrong type is a problem like
// the others, "FILE:LINE: KEY: ...", not the decoder's own line format.
func TestCheckPlacesTypeErrors(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"1.5", `^:\d+: wechat.timeout: incompatible types: TOML value has type float64`},
		{"00:00:05", `^:\d+: wechat.timeout: incompatible types`},
	} {
		conf := strings.Replace(checkConf, "[wechat.official_account]", "[wechat]\ntimeout = "+tc.value+"\n\n[wechat.official_account]", 1)
		lines, ok := check(t, conf)
		if ok || len(lines) != 1 || !regexp.MustCompile(tc.want).MatchString(lines[0]) {
			t.Errorf("timeout = %s: %q (accepted %v), want %q", tc.value, lines, ok, tc.want)
		}
	}
}

// TestCheckPrefixIsPlain: [server] prefix is a literal path the router and
// the policy engine read the same way: router syntax (":tenant", "*", "?")
// and what normalization changes are refused.
func TestCheckPrefixIsPlain(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"/_wxgate", true},
		{"/.well-known/wxgate", true},
		{"/auth-v2/x_y~z", true},
		{"/:tenant", false},
		{"/_wx*", false},
		{"/_wx?gate", false},
		{"/_wx gate", false},
		{"/a//b", false},
		{"/a/../b", false},
		{"/a/./b", false},
		{"/%2e%2e", false},
	} {
		conf := strings.Replace(checkConf, "[server]\n", fmt.Sprintf("[server]\nprefix = %q\n", tc.prefix), 1)
		lines, ok := check(t, conf)
		if ok != tc.ok || !ok && (len(lines) != 1 || !strings.Contains(lines[0], "server.prefix: ")) {
			t.Errorf("prefix %q: accepted %v, %q; want accepted %v", tc.prefix, ok, lines, tc.ok)
		}
	}
}

// TestCheckWarnsTrustAll: trusted_proxies that trusts every address is
// accepted with a warning on its line: any client could then set the
// address the per-client limits and the logs go by.
func TestCheckWarnsTrustAll(t *testing.T) {
	for _, tc := range []struct {
		list string
		warn bool
	}{
		{`["10.0.0.0/8"]`, false},
		{`["10.0.0.0/8", "0.0.0.0/0"]`, true},
		{`["::/0"]`, true},
	} {
		conf := strings.Replace(checkConf, "[server]\n", "[server]\ntrusted_proxies = "+tc.list+"\n", 1)
		lines, ok := check(t, conf)
		warned := len(lines) == 1 && regexp.MustCompile(`^:2: warning: server.trusted_proxies: ".*/0" trusts every address`).MatchString(lines[0])
		if !ok || warned != tc.warn || !tc.warn && len(lines) != 0 {
			t.Errorf("trusted_proxies = %s: %q (accepted %v), want a warning: %v", tc.list, lines, ok, tc.warn)
		}
	}
}

// TestCheckNamesOnOneLine: a route's or upstream's name with a line break
// or an escape sequence is quoted wherever a problem names its element,
// so that it cannot pass for another problem of the report (a line break
// in it printed a second line, which check then placed on a wrong line).
func TestCheckNamesOnOneLine(t *testing.T) {
	const forged = `ok\nroute[9] (fake).path: forged\u001b[2K`
	for _, tc := range []struct{ name, add, want string }{
		{"unknown upstream", "[[route]]\nname = \"" + forged + "\"\npath = \"/a/**\"\nupstream = \"nope\"\n",
			`route[0] ("ok\nroute[9] (fake).path: forged\x1b[2K").upstream: no [[upstream]] named "nope"`},
		{"decoder's refusal", "[[upstream]]\nname = \"" + forged + "\"\nurl = \"http://127.0.0.1:1\"\ntimeout = \"soon\"\n",
			`upstream[1] ("ok\nroute[9] (fake).path: forged\x1b[2K").timeout: `},
		{"unknown key", "[[route]]\nname = \"" + forged + "\"\npath = \"/a/**\"\nupstrem = \"app\"\n",
			`unknown key route[0] ("ok\nroute[9] (fake).path: forged\x1b[2K").upstrem`},
		{"policies' refusal", "[[route]]\nname = \"" + forged + "\"\npath = \"/a/**\"\naction = \"sideways\"\n",
			`route[0] ("ok\nroute[9] (fake).path: forged\x1b[2K")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, ok := check(t, checkConf+"\n"+tc.add)
			if ok {
				t.Fatalf("accepted: %q", lines)
			}
			found := false
			for _, l := range lines {
				if strings.ContainsAny(l, "\n\x1b") {
					t.Errorf("a problem spans lines or holds an escape: %q", l)
				}
				found = found || strings.Contains(l, tc.want)
			}
			if !found {
				t.Errorf("problems %q, want one with %q", lines, tc.want)
			}
		})
	}
}
