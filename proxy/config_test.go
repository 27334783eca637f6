package proxy_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/session"
)

// configEnv is the environment the configs under testdata/config see. No
// value may appear in a report.
var configEnv = map[string]string{
	"WXGATE_TEST_OA_SECRET":   "oa-s3cret-value",
	"WXGATE_TEST_ADMIN_TOKEN": "admin-s3cret-0123456789",
	"WXGATE_TEST_REDIS_KEY":   "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	"WXGATE_TEST_REDIS_PW":    "redis-s3cret-value",
}

// loadConfig copies testdata/config into a directory of its own, moves
// there (the configs name their files relative to it) and loads name.toml
// from it.
func loadConfig(t *testing.T, name string) (cfg *proxy.Config, warnings []string, dir string, err error) {
	t.Helper()
	src, err := filepath.Abs("testdata/config")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	cfg, warnings, err = proxy.LoadConfig(name+".toml", nil)
	return cfg, warnings, dir, err
}

// report is what `wxgate check` prints for a config: its warnings, then
// one line per problem, or "ok".
func report(warnings []string, err error) string {
	var b strings.Builder
	for _, w := range warnings {
		b.WriteString("warning: " + w + "\n")
	}
	if err != nil {
		b.WriteString(err.Error() + "\n")
	} else {
		b.WriteString("ok\n")
	}
	return b.String()
}

// TestConfigGolden: each testdata/config/NAME.toml, loaded, provisioned and
// validated, reports what NAME.golden holds (go test -update rewrites
// them). Then, with every secret variable unset and every file the config
// names removed, Validate still gives the same answer: it reads nothing.
func TestConfigGolden(t *testing.T) {
	for k, v := range configEnv {
		t.Setenv(k, v)
	}
	paths, err := filepath.Glob("testdata/config/*.toml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".toml")
		golden, err := filepath.Abs(filepath.Join("testdata/config", name+".golden"))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			cfg, warnings, dir, err := loadConfig(t, name)
			if err == nil {
				err = errors.Join(cfg.Provision(), cfg.Validate())
			}
			got := report(warnings, err)
			if updating() {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("report for %s.toml (-want +got):\n%s", name, diff)
			}
			for k, v := range configEnv {
				if strings.Contains(got, v) {
					t.Errorf("the report shows the value of %s", k)
				}
			}
			if cfg == nil {
				return
			}

			before := fmt.Sprint(cfg.Validate())
			for k := range configEnv {
				t.Setenv(k, "")
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if after := fmt.Sprint(cfg.Validate()); after != before {
				t.Errorf("Validate with the variables unset and the files gone = %s, want %s as before", after, before)
			}
		})
	}
}

// TestValidateNeedsProvision: Validate and New refuse a config Provision
// has not prepared, rather than check or wire zero values.
func TestValidateNeedsProvision(t *testing.T) {
	t.Setenv("WXGATE_TEST_OA_SECRET", "x")
	cfg, _, _, err := loadConfig(t, "bad_cidr")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate before Provision = nil, want an error")
	}
	if _, err := proxy.New(cfg, proxy.Options{Logger: discardLogger()}); err == nil {
		t.Error("New before Provision = nil error, want one")
	}
	if cfg.Provision() == nil {
		t.Fatal("Provision of bad_cidr.toml = nil, want its problems")
	}
	if _, err := proxy.New(cfg, proxy.Options{Logger: discardLogger()}); err == nil {
		t.Error("New after a Provision with problems = nil error, want one")
	}
}

// TestNewRefusesAnInvalidConfig: a config Provision met no problem with
// but Validate refuses (here: no public_url) makes New return an error, as
// New did before it stopped parsing the config itself; it panicked (found
// by attack).
func TestNewRefusesAnInvalidConfig(t *testing.T) {
	for k, v := range configEnv {
		t.Setenv(k, v)
	}
	cfg, _, _, err := loadConfig(t, "good")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.PublicURL = ""
	if err := cfg.Provision(); err != nil {
		t.Fatalf("Provision = %v, want nil (a missing public_url is Validate's to report)", err)
	}
	if cfg.Validate() == nil {
		t.Fatal("Validate without public_url = nil, want an error")
	}
	gw, err := proxy.New(cfg, proxy.Options{Logger: discardLogger(), Store: session.NewMemory(0)})
	if err == nil {
		gw.Shutdown(t.Context())
		t.Error("New of a config Validate refuses = nil error, want one")
	}
}

// TestNewReadsNothing: New wires what Provision read. With the secret
// variables unset and the files gone after Provision, the gateway still
// has the admin token and serves the verify file it read then.
func TestNewReadsNothing(t *testing.T) {
	for k, v := range configEnv {
		t.Setenv(k, v)
	}
	cfg, _, dir, err := loadConfig(t, "good")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		t.Fatal(err)
	}
	for k := range configEnv {
		t.Setenv(k, "")
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	pem, err := session.GenerateKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := session.ParseKeys(pem)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := proxy.New(cfg, proxy.Options{Logger: discardLogger(), Keys: keys, Store: session.NewMemory(0)})
	if err != nil {
		t.Fatalf("New after the sources went away: %v", err)
	}
	defer gw.Shutdown(t.Context())

	req, _ := http.NewRequest(http.MethodGet, "https://app.example.com/MP_verify_abc123.txt", nil)
	resp, err := gw.App().Test(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, []byte("verify-body-1234\n")) {
		t.Errorf("GET /MP_verify_abc123.txt = %d %q, want 200 with the file's body", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		token string
		want  int
	}{
		{"", http.StatusUnauthorized},
		{"not-the-token-0123456789", http.StatusUnauthorized},
		{configEnv["WXGATE_TEST_ADMIN_TOKEN"], http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:9090/sessions?openid=nobody", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := gw.AdminApp().Test(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("admin GET /sessions with token %q = %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
}

// updating reports whether -update was given: the flag is declared once for
// the test binary, by the package's internal tests (errors_test.go).
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// TestAdminBeyondLoopbackNeedsToken: an admin listener other hosts can
// reach (":9090", "0.0.0.0:9090", a pod or LAN address, a name) without
// admin_token_env would hand /app-token's WeChat access tokens and
// /sessions' logouts to all of them: the config is refused. Loopback
// needs no token.
func TestAdminBeyondLoopbackNeedsToken(t *testing.T) {
	for k, v := range configEnv {
		t.Setenv(k, v)
	}
	if _, _, _, err := loadConfig(t, "good"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		listen, tokenEnv string
		ok               bool
	}{
		{"127.0.0.1:9090", "", true},
		{"127.0.0.2:9090", "", true},
		{"[::1]:9090", "", true},
		{"localhost:9090", "", true},
		{":9090", "", false},
		{"0.0.0.0:9090", "", false},
		{"[::]:9090", "", false},
		{"10.1.2.3:9090", "", false},
		{"admin.internal:9090", "", false},
		{"0.0.0.0:9090", "WXGATE_TEST_ADMIN_TOKEN", true},
	} {
		cfg, _, err := proxy.LoadConfig("good.toml", nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Server.AdminListen, cfg.Server.AdminTokenEnv = tc.listen, tc.tokenEnv
		err = errors.Join(cfg.Provision(), cfg.Validate())
		if got := err == nil; got != tc.ok || !tc.ok && !strings.Contains(err.Error(), "server.admin_listen") {
			t.Errorf("admin_listen %q, admin_token_env %q: %v, want ok=%v", tc.listen, tc.tokenEnv, err, tc.ok)
		}
	}
}
