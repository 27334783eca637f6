// Package secret holds a string that redacts itself when formatted or
// logged: an AppSecret, a WeChat token, a session_key. It stands apart so
// that the packages that keep such values (session) and the one that
// obtains them (wechat) need not import each other.
package secret

import (
	"fmt"
	"log/slog"
)

// Secret is a value that must never reach a log line or an error message.
// A secret formatted or logged by mistake prints as "[REDACTED]". Use
// Reveal where the real value is needed (a request to WeChat, a store).
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

// EnvName is how an error names the environment variable a *_env key
// gives: the name itself when it is one, or a placeholder when it is not,
// since an operator who wrote the secret itself into the key would
// otherwise see it printed in the error (and in the logs).
func EnvName(name string) string {
	if len(name) == 0 || len(name) > 128 {
		return "(not a variable name: is the secret itself in this key?)"
	}
	lower, underscore := false, false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (i == 0 || c < '0' || c > '9') {
			return "(not a variable name: is the secret itself in this key?)"
		}
		lower = lower || ('a' <= c && c <= 'z')
		underscore = underscore || c == '_'
	}
	if len(name) >= 20 && lower && !underscore {
		// Shaped like a key (an AppSecret is 32 lowercase hex digits),
		// not like a variable name.
		return "(not a variable name: is the secret itself in this key?)"
	}
	return name
}

// UnsetError is a secret's environment variable found empty or unset: a
// problem for a gateway that starts, but only a warning for `wxgate check`
// on a machine without the production secrets (issue 12), which tells it
// from the others with errors.As.
type UnsetError struct{ Var string }

func (e *UnsetError) Error() string {
	return "environment variable " + EnvName(e.Var) + " is empty or unset"
}
