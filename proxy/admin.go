package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/pprof"
	"github.com/gofiber/fiber/v2/middleware/recover"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// newAdminApp builds the admin listener: metrics and probes, and the admin
// API for internal services and operators.
func (s *Server) newAdminApp() *fiber.App {
	// The admin listener speaks to programs and operators' scripts: every
	// error is JSON, whatever Accept says.
	adminError := func(c *fiber.Ctx, err error) error { return s.handleError(c, classify(err).asJSON()) }
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: adminError, Network: fiber.NetworkTCP})
	app.Use(recover.New())
	app.Use(s.adminHost)
	app.Get("/metrics", adaptor.HTTPHandler(s.metrics.Handler()))
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", s.readyz)
	app.Get("/", s.adminIndex)
	api := app.Group("", s.requireAdmin)
	api.Get("/app-token", s.adminAppToken)
	api.Post("/app-token/invalidate", s.adminInvalidate)
	api.Get("/sessions", s.adminSessions)
	api.Delete("/sessions", s.adminSessions)
	if s.cfg.Server.Pprof {
		api.Use(pprof.New())
	}
	return app
}

// adminEndpoints is what GET / on the admin listener lists: an operator
// who finds the port learns what it answers.
var adminEndpoints = []fiber.Map{
	{"method": "GET", "path": "/metrics", "auth": false, "about": "Prometheus metrics"},
	{"method": "GET", "path": "/healthz", "auth": false, "about": "liveness: the process answers"},
	{"method": "GET", "path": "/readyz", "auth": false, "about": "readiness: the store answers and no shutdown is under way"},
	{"method": "GET", "path": "/app-token?appid=", "auth": true, "about": "the app access token of an appid, for internal services"},
	{"method": "POST", "path": "/app-token/invalidate", "auth": true, "about": `{"appid","access_token"}: refresh it if that token is still the current one`},
	{"method": "GET", "path": "/sessions?user=|unionid=|openid=", "auth": true, "about": "a person's logins through every app"},
	{"method": "DELETE", "path": "/sessions?user=|unionid=|openid=", "auth": true, "about": "end them all"},
}

// adminIndex lists the admin endpoints. "auth" ones need the admin secret
// as a bearer token when [server] admin_token_env names one.
func (s *Server) adminIndex(c *fiber.Ctx) error {
	eps := adminEndpoints
	if s.cfg.Server.Pprof {
		eps = append(slices.Clip(eps), fiber.Map{"method": "GET", "path": "/debug/pprof/", "auth": true, "about": "Go profiles ([server] pprof)"})
	}
	return c.JSON(fiber.Map{"service": "wxgate admin", "endpoints": eps})
}

// adminHost refuses requests whose Host is a name the admin listener does
// not go by. A web page can make a browser on an operator's machine send
// requests to 127.0.0.1:9090 under its own name (DNS rebinding); the Host
// header still carries that name, so only IP literals, localhost, the
// admin listen address's host and [server] admin_hosts are answered.
func (s *Server) adminHost(c *fiber.Ctx) error {
	name, _, err := parseHost(string(c.Request().Header.Host()))
	if err != nil || !s.isAdminHost(name) {
		return forbidden(fmt.Errorf("admin request for host %q", c.Request().Header.Host())).asJSON()
	}
	return c.Next()
}

// isAdminHost reports whether name (as parseHost returns it) may address
// the admin listener.
func (s *Server) isAdminHost(name string) bool {
	if isIP(name) {
		return true // an IP literal is not a name a page can rebind
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	if h, _, err := net.SplitHostPort(s.cfg.Server.AdminListen); err == nil && strings.EqualFold(strings.TrimSuffix(h, "."), name) {
		return true
	}
	// Entries have no port (Validate): only the bare name matches.
	return listed(s.cfg.Server.AdminHosts, name, "")
}

// requireAdmin checks the admin bearer secret when one is configured.
func (s *Server) requireAdmin(c *fiber.Ctx) error {
	if s.adminToken == "" {
		return c.Next()
	}
	tok, _ := bearerToken(c)
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminToken)) != 1 {
		return invalidToken(nil)
	}
	return c.Next()
}

func (s *Server) readyz(c *fiber.Ctx) error {
	if s.draining.Load() {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "draining"})
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	if err := s.sessions.Ping(ctx); err != nil {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "store unavailable", "store": s.cfg.Session.Store})
	}
	// A blocked app token (IP whitelist, quota) needs a person, but the
	// gateway still serves logins: report it without leaving the pool.
	blocked := fiber.Map{}
	for id, h := range s.holders {
		if why := h.Blocked(ctx); why != "" {
			blocked[id] = why
		}
	}
	if len(blocked) > 0 {
		return c.JSON(fiber.Map{"status": "degraded", "store": s.cfg.Session.Store, "app_token_blocked": blocked})
	}
	return c.JSON(fiber.Map{"status": "ready", "store": s.cfg.Session.Store})
}

// newHolder builds the shared app-token holder of app, reporting to logs
// and metrics.
func (s *Server) newHolder(app wechat.App) *wechat.Holder {
	return wechat.NewHolder(s.wechat, app, s.sessions.Shared("apptoken:"), wechat.HolderConfig{
		Source:     s.cfg.WeChat.AppTokenSource,
		IsNotFound: isNotFound,
		Now:        func() time.Time { return s.sessions.Now() },
		OnFetch: func(t *wechat.AppToken, result string, err error) {
			s.metrics.Refresh("app", result)
			for _, code := range wechat.BlockingCodes {
				errcode := strconv.Itoa(code)
				s.metrics.AppTokenBlocked(app.AppID, errcode, result == errcode)
			}
			if t != nil {
				s.metrics.AppToken(app.AppID, t.FetchedAt, t.ExpiresAt)
				s.log.Info("fetched app access token", "appid", app.AppID, "result", result, "expires_at", t.ExpiresAt)
				return
			}
			level := slog.LevelWarn
			if wechat.NeedsPerson(err) {
				level = slog.LevelError
			}
			s.log.Log(context.Background(), level, "fetching app access token failed", "appid", app.AppID, "result", result, "error", err)
		},
	})
}

func (s *Server) holder(c *fiber.Ctx, appID string) (*wechat.Holder, error) {
	h, ok := s.holders[appID]
	if !ok {
		return nil, notFound(errors.New("no app access token for that appid")).asJSON()
	}
	return h, nil
}

// appTokenAnswer is the JSON of GET /app-token.
func appTokenAnswer(c *fiber.Ctx, t *wechat.AppToken, now time.Time, extra fiber.Map) error {
	noStore(c)
	m := fiber.Map{"access_token": t.AccessToken.Reveal(), "expires_in": int(t.ExpiresAt.Sub(now) / time.Second)}
	for k, v := range extra {
		m[k] = v
	}
	return c.JSON(m)
}

// adminAppToken: GET /app-token?appid= -> {"access_token","expires_in"}.
func (s *Server) adminAppToken(c *fiber.Ctx) error {
	h, err := s.holder(c, c.Query("appid"))
	if err != nil {
		return err
	}
	t, err := h.Get(c.UserContext())
	if err != nil {
		return appTokenError(err)
	}
	return appTokenAnswer(c, t, s.sessions.Now(), nil)
}

// adminInvalidate: POST /app-token/invalidate {"appid","access_token"}
// refreshes only if that token is still the current one.
func (s *Server) adminInvalidate(c *fiber.Ctx) error {
	var req struct {
		AppID       string `json:"appid"`
		AccessToken string `json:"access_token"`
	}
	if err := readJSON(c, &req); err != nil {
		return err
	}
	if req.AccessToken == "" {
		return badRequest("access_token: required")
	}
	h, err := s.holder(c, req.AppID)
	if err != nil {
		return err
	}
	t, refreshed, err := h.Invalidate(c.UserContext(), wechat.Secret(req.AccessToken))
	if err != nil {
		return appTokenError(err)
	}
	return appTokenAnswer(c, t, s.sessions.Now(), fiber.Map{"refreshed": refreshed})
}

func appTokenError(err error) error {
	switch {
	case errors.Is(err, wechat.ErrBlocked):
		return appTokenBlocked(err)
	case errors.Is(err, session.ErrUnavailable):
		return apiWeChatError(err) // 503 unavailable as JSON, like the other app-token errors, not the HTML page
	}
	return apiWeChatError(err)
}

// adminSessions: GET or DELETE /sessions?user=|unionid=|openid= lists or
// ends a person's browser sessions and token families, on every replica
// (they share the store). user is X-Forwarded-User as the upstream saw it:
// the unionid, which joins the person's logins through every app, or the
// openid of a login without one.
func (s *Server) adminSessions(c *fiber.Ctx) error {
	var user string
	for _, k := range []string{"user", "unionid", "openid"} {
		if user = c.Query(k); user != "" {
			break
		}
	}
	if user == "" || len(user) > 64 || strings.ContainsAny(user, " \t\r\n") {
		return badRequest("user, unionid or openid: required")
	}
	user = strings.Clone(user)
	ctx := c.UserContext()
	logins, err := s.sessions.Logins(ctx, user)
	if err != nil {
		return storeError(err)
	}
	del := c.Method() == http.MethodDelete
	out := []fiber.Map{}
	for _, l := range logins {
		id := l.ID
		switch l.Kind {
		case "session":
			sess, err := s.sessions.GetByKey(ctx, id)
			if isNotFound(err) {
				_ = s.sessions.Unlist(ctx, user, l)
				continue
			} else if err != nil {
				return storeError(err)
			}
			if del {
				if err := s.sessions.DeleteByKey(ctx, id); err != nil {
					return storeError(err)
				}
			}
			out = append(out, fiber.Map{"kind": "session", "id": id, "openid": sess.Identity.OpenID, "unionid": sess.Identity.UnionID,
				"appid": sess.Identity.AppID, "scope": sess.Identity.Scope, "created": sess.Created, "last_seen": sess.LastSeen})
		case "token_family":
			f, err := s.issuer.Family(ctx, id)
			if isNotFound(err) {
				_ = s.sessions.Unlist(ctx, user, l)
				continue
			} else if err != nil {
				return storeError(err)
			}
			if del && !f.Revoked {
				if err := s.issuer.RevokeFamily(ctx, id); err != nil {
					return storeError(err)
				}
				f.Revoked = true
			}
			out = append(out, fiber.Map{"kind": "token_family", "id": id, "openid": f.Identity.OpenID, "unionid": f.Identity.UnionID,
				"appid": f.Identity.AppID, "scope": f.Identity.Scope, "created": f.Created, "revoked": f.Revoked})
		}
	}
	if del {
		s.authEvent(c, slog.LevelInfo, "revocation", &session.Identity{OpenID: user},
			slog.String("by", "admin"), slog.Int("logins", len(out)))
	}
	noStore(c)
	return c.JSON(fiber.Map{"user": user, "revoked": del, "logins": out})
}
