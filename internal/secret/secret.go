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
