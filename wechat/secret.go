package wechat

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/wxgate/wxgate/internal/secret"
)

// Secret holds an AppSecret or a WeChat token and redacts itself when
// formatted or logged (internal/secret).
type Secret = secret.Secret

// AppConfig is one WeChat app in gateway.toml ([wechat.official_account],
// [wechat.website], [wechat.miniprogram], [wechat.app]).
type AppConfig struct {
	// AppID is the app's appid ("wx..."). Empty means the app is not configured.
	AppID string `toml:"appid"`
	// SecretEnv names an environment variable holding the AppSecret. Preferred.
	SecretEnv string `toml:"secret_env"`
	// SecretFile is a file holding the AppSecret (surrounding space trimmed).
	SecretFile string `toml:"secret_file"`
	// Secret is the AppSecret written literally. Accepted with a warning:
	// a config file is the wrong place for it.
	Secret string `toml:"secret"`
	// VerifyFile is the official account's domain-verification file
	// (MP_verify_*.txt), served at the root of the public listener.
	// Official account only.
	VerifyFile string `toml:"verify_file"`

	// resolved is the AppSecret Provision read: empty before Provision and
	// for an app that is not configured.
	resolved Secret
}

// Configured reports whether the app has an appid.
func (a AppConfig) Configured() bool { return a.AppID != "" }

// Provision reads the AppSecret of a configured app, once, from the first
// source that is set: SecretEnv, SecretFile, Secret. An app without an
// appid needs none and reads nothing. The error starts with the key it
// concerns ("secret_env: ...") and never holds the value. App returns
// what it read.
func (a *AppConfig) Provision() error {
	a.resolved = ""
	if !a.Configured() {
		return nil
	}
	switch {
	case a.SecretEnv != "":
		v := os.Getenv(a.SecretEnv)
		if v == "" {
			return fmt.Errorf("secret_env: %w", &secret.UnsetError{Var: a.SecretEnv})
		}
		a.resolved = Secret(v)
	case a.SecretFile != "":
		b, err := os.ReadFile(a.SecretFile)
		if err != nil {
			return fmt.Errorf("secret_file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return fmt.Errorf("secret_file: %s is empty", a.SecretFile)
		}
		a.resolved = Secret(v)
	case a.Secret != "":
		a.resolved = Secret(a.Secret)
	default:
		return fmt.Errorf("secret_env: required (or secret_file)")
	}
	return nil
}

// App is the app with the secret Provision read; its Secret is empty
// before Provision.
func (a AppConfig) App() App { return App{AppID: a.AppID, Secret: a.resolved} }

// Provision reads the secrets of the configured apps (AppConfig.Provision),
// reporting every one it cannot read with its key from [wechat] on
// ("wechat.official_account.secret_env: ...").
func (c *Config) Provision() error {
	var errs []error
	for _, a := range []struct {
		key string
		app *AppConfig
	}{
		{"official_account", &c.OfficialAccount},
		{"website", &c.Website},
		{"miniprogram", &c.MiniProgram},
		{"app", &c.MobileApp},
	} {
		if err := a.app.Provision(); err != nil {
			errs = append(errs, fmt.Errorf("wechat.%s.%w", a.key, err))
		}
	}
	return errors.Join(errs...)
}

// App is a configured WeChat app with its secret resolved.
type App struct {
	AppID  string
	Secret Secret
}
