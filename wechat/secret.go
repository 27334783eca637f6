package wechat

import (
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
}

// Configured reports whether the app has an appid.
func (a AppConfig) Configured() bool { return a.AppID != "" }

// ResolveSecret reads the AppSecret from the first source that is set:
// SecretEnv, SecretFile, Secret. The error starts with the key it concerns
// ("secret_env: ...") and never holds the value.
func (a AppConfig) ResolveSecret() (Secret, error) {
	switch {
	case a.SecretEnv != "":
		v := os.Getenv(a.SecretEnv)
		if v == "" {
			return "", fmt.Errorf("secret_env: environment variable %s is empty or unset", a.SecretEnv)
		}
		return Secret(v), nil
	case a.SecretFile != "":
		b, err := os.ReadFile(a.SecretFile)
		if err != nil {
			return "", fmt.Errorf("secret_file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("secret_file: %s is empty", a.SecretFile)
		}
		return Secret(v), nil
	case a.Secret != "":
		return Secret(a.Secret), nil
	}
	return "", fmt.Errorf("secret_env: required (or secret_file)")
}

// App is a configured WeChat app with its secret resolved.
type App struct {
	AppID  string
	Secret Secret
}
