package wechat

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret holds an AppSecret or a WeChat token. It redacts itself when
// formatted or logged, so a secret that reaches a log line by mistake prints
// as "[REDACTED]". Use Reveal where the real value is needed (a request to
// WeChat, a store).
type Secret string

const redacted = "[REDACTED]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Format implements fmt.Formatter so that %s, %v, %q and %x all redact.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

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
