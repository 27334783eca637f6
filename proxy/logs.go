package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"unsafe"

	"github.com/gofiber/fiber/v2"

	"github.com/wxgate/wxgate/policies"
	"github.com/wxgate/wxgate/session"
)

// NewLogger makes the gateway's logger on w: [log] format (def when the
// key is empty: json for serve, text for dev) at [server] log_level.
func NewLogger(w io.Writer, cfg *Config, def string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel()}
	format := cfg.Log.Format
	if format == "" {
		format = def
	}
	if format == LogText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// pseudonym writes the log pseudonym of user into dst (16 hex digits): the
// first 8 bytes of HMAC-SHA-256(key, user), computed on the stack so the
// access line costs no allocation for it.
func pseudonym(dst *[16]byte, key []byte, user string) {
	const block = sha256.BlockSize
	var k [block]byte
	if len(key) > block {
		sum := sha256.Sum256(key)
		copy(k[:], sum[:])
	} else {
		copy(k[:], key)
	}
	var buf [block + 128]byte
	msg := buf[:block]
	for i := range k {
		msg[i] = k[i] ^ 0x36
	}
	msg = append(msg, user...)
	inner := sha256.Sum256(msg)
	var outer [block + sha256.Size]byte
	for i := range k {
		outer[i] = k[i] ^ 0x5c
	}
	copy(outer[block:], inner[:])
	sum := sha256.Sum256(outer[:])
	hex.Encode(dst[:], sum[:8])
}

// logUser is id as [log] users shows it, kept in r when r is given (no
// allocation), and whether it is shown at all.
func (s *Server) logUser(r *request, id *session.Identity) (string, bool) {
	if id == nil {
		return "", false
	}
	switch s.logUsers {
	case usersNone:
		return "", false
	case usersPlain:
		return id.User(), true
	}
	if r == nil {
		var b [16]byte
		pseudonym(&b, s.issuer.Keys().PseudonymKey(), id.User())
		return string(b[:]), true
	}
	pseudonym(&r.userBuf, s.issuer.Keys().PseudonymKey(), id.User())
	// userBuf is written once per request, and the string keeps r alive.
	return unsafe.String(&r.userBuf[0], len(r.userBuf)), true
}

// authEvent logs one auth event (login, refresh, logout, revocation,
// denial) at info, with the request's ID and client and, when known, the
// user. attrs must carry no secret: no code, token, ticket or session ID.
func (s *Server) authEvent(c *fiber.Ctx, level slog.Level, event string, id *session.Identity, attrs ...slog.Attr) {
	ctx := context.Background()
	if c != nil {
		ctx = c.UserContext()
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	all := make([]slog.Attr, 0, len(attrs)+4)
	all = append(all, slog.String("event", event))
	if c != nil {
		r := requestOf(c)
		all = append(all, slog.String("request_id", r.id), slog.String("client", r.client.String()))
	}
	if u, ok := s.logUser(nil, id); ok {
		all = append(all, slog.String("user", u))
	}
	all = append(all, attrs...)
	s.log.LogAttrs(ctx, level, "auth", all...)
}

// loginEvent logs a login's outcome: result "ok", or what failed.
func (s *Server) loginEvent(c *fiber.Ctx, flow string, id *session.Identity, appid, scope, result string) {
	level := slog.LevelInfo
	if result != "ok" {
		level = slog.LevelWarn
	}
	s.authEvent(c, level, "login", id,
		slog.String("flow", flow), slog.String("scope", scope), slog.String("appid", appid), slog.String("result", result))
}

// loginFailed counts a browser login's failure and logs it.
func (s *Server) loginFailed(c *fiber.Ctx, flow, result string) {
	s.metrics.Login(flow, result)
	appid := ""
	switch flow {
	case "oa", "qr":
		appid = s.flowApp(flow).AppID
	}
	s.loginEvent(c, flow, nil, appid, "", result)
}

// refreshEvent counts a WeChat user token refresh (kind sns) and logs it.
func (s *Server) refreshEvent(result string) {
	s.metrics.Refresh("sns", result)
	level := slog.LevelInfo
	if result != "ok" {
		level = slog.LevelWarn
	}
	s.authEvent(nil, level, "refresh", nil, slog.String("kind", "sns"), slog.String("result", result))
}

// denialReason names why a policy decision refused a request.
func denialReason(d policies.Decision) string {
	switch d.Outcome {
	case policies.NeedLogin:
		return "login_required"
	case policies.NeedScope:
		return "insufficient_scope"
	case policies.Forbidden:
		if d.Rule != nil && d.Rule.Action == policies.Deny {
			return "deny_rule"
		}
		return "not_in_allow_list"
	}
	return "refused"
}

// denied logs a refused request as the auth event "denial".
func (s *Server) denied(c *fiber.Ctx, route, reason string, id *session.Identity) {
	s.authEvent(c, slog.LevelInfo, "denial", id, slog.String("route", route), slog.String("reason", reason))
}

// callerIdentity is who's identity, nil without a caller.
func callerIdentity(who *caller) *session.Identity {
	if who == nil {
		return nil
	}
	return who.id
}
