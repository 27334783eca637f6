package wechat_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wxgate/wxgate/wechat"
)

// TestAppConfigProvision: the AppSecret comes from the first source set,
// once; a problem names its key and never the value.
func TestAppConfigProvision(t *testing.T) {
	const value = "app-s3cret-value"
	t.Setenv("WXGATE_TEST_APP_SECRET", value)
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	empty := filepath.Join(dir, "empty")
	for name, body := range map[string]string{file: "  " + value + "\n", empty: "\n"} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		cfg     wechat.AppConfig
		want    wechat.App
		wantErr string // the error's start; "" for none
	}{
		{"env", wechat.AppConfig{AppID: "wx1", SecretEnv: "WXGATE_TEST_APP_SECRET"}, wechat.App{AppID: "wx1", Secret: value}, ""},
		{"env before file", wechat.AppConfig{AppID: "wx1", SecretEnv: "WXGATE_TEST_APP_SECRET", SecretFile: "/nonexistent"}, wechat.App{AppID: "wx1", Secret: value}, ""},
		{"file, trimmed", wechat.AppConfig{AppID: "wx1", SecretFile: file}, wechat.App{AppID: "wx1", Secret: value}, ""},
		{"literal", wechat.AppConfig{AppID: "wx1", Secret: value}, wechat.App{AppID: "wx1", Secret: value}, ""},
		{"not configured", wechat.AppConfig{SecretEnv: "WXGATE_TEST_UNSET"}, wechat.App{}, ""},
		{"env unset", wechat.AppConfig{AppID: "wx1", SecretEnv: "WXGATE_TEST_UNSET"}, wechat.App{AppID: "wx1"}, "secret_env: environment variable WXGATE_TEST_UNSET is empty or unset"},
		{"file missing", wechat.AppConfig{AppID: "wx1", SecretFile: filepath.Join(dir, "missing")}, wechat.App{AppID: "wx1"}, "secret_file: open "},
		{"file empty", wechat.AppConfig{AppID: "wx1", SecretFile: empty}, wechat.App{AppID: "wx1"}, "secret_file: " + empty + " is empty"},
		{"none", wechat.AppConfig{AppID: "wx1"}, wechat.App{AppID: "wx1"}, "secret_env: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.cfg
			err := a.Provision()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Provision() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)):
				t.Errorf("Provision() = %v, want an error starting %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), value):
				t.Errorf("Provision() = %v, which shows the secret", err)
			}
			if diff := cmp.Diff(tc.want, a.App()); diff != "" {
				t.Errorf("App() after Provision (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConfigProvisionNamesKeys: Config.Provision reports every app whose
// secret does not resolve, by its key from [wechat] on, and keeps what it
// read: the variable unset afterwards changes nothing.
func TestConfigProvisionNamesKeys(t *testing.T) {
	t.Setenv("WXGATE_TEST_APP_SECRET", "x")
	cfg := wechat.Config{
		OfficialAccount: wechat.AppConfig{AppID: "wx1", SecretEnv: "WXGATE_TEST_APP_SECRET"},
		MiniProgram:     wechat.AppConfig{AppID: "wx2", SecretEnv: "WXGATE_TEST_UNSET"},
		MobileApp:       wechat.AppConfig{AppID: "wx3"},
	}
	err := cfg.Provision()
	want := "wechat.miniprogram.secret_env: environment variable WXGATE_TEST_UNSET is empty or unset\n" +
		"wechat.app.secret_env: required (or secret_file)"
	if err == nil || err.Error() != want {
		t.Errorf("Provision() = %v, want %q", err, want)
	}
	t.Setenv("WXGATE_TEST_APP_SECRET", "")
	if got := cfg.OfficialAccount.App().Secret.Reveal(); got != "x" {
		t.Errorf("official account's secret after the variable went = %q, want the %q Provision read", got, "x")
	}
}
