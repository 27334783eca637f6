package proxy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxgate/wxgate/proxy"
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
