// Package proxy is wxgate's HTTP face: the public listener (the proxied app
// and the /_wxgate endpoints) and the admin listener. It asks policies for a
// decision, session for the identity and wechat for tokens, and forwards
// allowed requests to upstreams with identity headers.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"

	"github.com/wxgate/wxgate/metrics"
	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// Server is one gateway: its public and admin fiber apps and everything they
// depend on. Build it with New.
type Server struct {
	cfg *Config
	log *slog.Logger
	// logUsers is [log] users: how access and auth lines show a user.
	logUsers string
	// origin is session.OriginDev in `wxgate dev` (cfg.Server.Dev), else
	// session.OriginServe: what New loads and Shutdown writes (issue 8).
	origin   session.Origin
	sessions *session.Manager
	issuer   *session.Issuer
	wechat   *wechat.Client
	metrics  *metrics.Metrics
	// live is the routes, upstreams and redirect hosts in force: what
	// Reload replaces. cfg stays the config the gateway started with,
	// whose other keys a reload may not change.
	live atomic.Pointer[live]
	// reloadMu makes reloads run one at a time; adjust is
	// Options.Adjust.
	reloadMu sync.Mutex
	adjust   func(*Config)
	// readSum is the hash of the config file's content as last read, at
	// the start or by a reload, accepted or not: what watch_config
	// compares the file with.
	readSum atomic.Pointer[[32]byte]
	// keyIDs are the kids of the signing keys loaded from
	// signing_key_file at the start; nil when Options.Keys gave them.
	// The file is read only then, so a reload refuses a file whose keys
	// differ now (keyFileChanged).
	keyIDs []string

	oa      wechat.App // the official account; AppID empty when not configured
	website wechat.App // the website app (QR login); AppID empty when not configured
	mp      wechat.App // the mini program; AppID empty when not configured
	mobile  wechat.App // the mobile app; AppID empty when not configured
	// holders keep the app access tokens of the official account and the
	// mini program, by appid.
	holders map[string]*wechat.Holder
	// adminToken, if set, is required by the admin API.
	adminToken string
	public     *url.URL
	// publicAuthority is the public URL's host[:port], normalized and
	// without the scheme's default port: what an origin is compared to.
	publicAuthority string
	prefix          string
	trusted         []netip.Prefix
	cookies         cookieNames
	verify          verifyFile
	// framingCSP is the pages' Content-Security-Policy with WeChat's page
	// origin allowed in a frame: the QR login page's.
	framingCSP string

	app   *fiber.App
	admin *fiber.App
	// draining is set by Drain: /readyz fails and responses close their
	// connections while the gateway serves on.
	draining atomic.Bool
	// pubConns and adminConns are the listeners' open connections, which
	// Shutdown closes between requests at once and cuts at its deadline.
	pubConns, adminConns *connSet
	// tunnels are the WebSockets open through the gateway, which fasthttp
	// no longer sees: Shutdown waits for them and closes them at its
	// deadline.
	tunnels *tunnelSet
	// starts bounds the browser logins in flight.
	starts *startLimiter
	// refreshes runs WeChat token refreshes in the background, one per
	// login.
	refreshes *refresher
	// stopSweeper ends the refresh sweeper; nil when it is off.
	stopSweeper context.CancelFunc
	// stopWatch ends [server] watch_config's watcher; nil when it is off.
	stopWatch context.CancelFunc
}

// Options are New's dependencies that do not come from gateway.toml.
type Options struct {
	// Logger receives the access and error log. Nil means slog.Default().
	Logger *slog.Logger
	// Store holds sessions. Nil means a memory store.
	Store session.Store
	// Keys signs tokens. Nil means load (or create) [tokens]
	// signing_key_file.
	Keys *session.KeySet
	// Now is the clock of sessions and tokens; tests move it. Nil means
	// time.Now.
	Now func() time.Time
	// Adjust, if set, changes the config each time Reload reads it again,
	// as the caller changed it before New (`wxgate dev` points it at its
	// simulator and demo upstream). Nil means none.
	Adjust func(*Config)
}

// New builds a gateway from cfg, provisioned (Config.Provision) and valid
// (New runs Config.Validate and returns its problems). It wires what
// Provision made and parses and reads nothing of the config again. It does what only a start may do and
// a check must not: it loads the signing key, creating the file when it is
// missing, and opens the store, which for the memory store consumes its
// snapshot. With cfg.Server.Dev it is `wxgate dev`'s gateway: the snapshot
// and signing key it writes are marked session.OriginDev, and otherwise it
// refuses files so marked (issue 8).
func New(cfg *Config, opts Options) (*Server, error) {
	if !cfg.ready {
		return nil, errNotProvisioned
	}
	// Validate reads nothing and costs nothing here; what it refuses (no
	// public_url, a zero bound) New would otherwise wire, or panic on.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	srv := cfg.Server
	s := &Server{
		cfg:             cfg,
		log:             log,
		logUsers:        cfg.Log.Users,
		origin:          session.OriginServe,
		adjust:          opts.Adjust,
		public:          srv.public,
		publicAuthority: srv.publicAuthority,
		prefix:          srv.Prefix,
		trusted:         srv.trusted,
		cookies:         newCookieNames(srv.public.Scheme == "https", cfg.Session.CookieDomain != ""),
		verify:          cfg.verify,
		adminToken:      srv.adminToken.Reveal(),
		oa:              cfg.WeChat.OfficialAccount.App(),
		website:         cfg.WeChat.Website.App(),
		mp:              cfg.WeChat.MiniProgram.App(),
		mobile:          cfg.WeChat.MobileApp.App(),
		pubConns:        newConnSet(),
		adminConns:      newConnSet(),
	}
	if srv.Dev {
		s.origin = session.OriginDev
	}
	s.metrics = metrics.New(func() float64 { return float64(s.sessions.Count()) })
	s.tunnels = newTunnelSet(s.metrics, cfg.Server.MaxWebSockets, cfg.Server.MaxWebSocketsPerClient, cfg.Server.WebSocketWriteTimeout)
	wcfg := cfg.WeChat
	wcfg.OnCall = s.metrics.WeChatCall
	s.wechat = wechat.New(wcfg)
	l, _ := s.newLive(cfg, nil)
	s.live.Store(l)
	sum := sha256.Sum256(cfg.source)
	s.readSum.Store(&sum)
	s.metrics.ConfigLoaded(time.Now())
	s.framingCSP = pageCSP + "; frame-src " + s.wechat.OpenOrigin()
	keys := opts.Keys
	if keys == nil {
		var (
			created bool
			err     error
		)
		keys, created, err = session.LoadKeys(cfg.Tokens.SigningKeyFile, s.origin)
		if err != nil {
			return nil, fmt.Errorf("tokens.signing_key_file: %w", err)
		}
		switch {
		case created && s.origin == session.OriginDev:
			// Marked dev: serve refuses it, so there is nothing to keep.
			log.Info("generated a signing key for wxgate dev", "file", cfg.Tokens.SigningKeyFile, "alg", keys.Algorithm())
		case created:
			log.Warn("generated a new signing key; keep this file, and give every replica the same one",
				"file", cfg.Tokens.SigningKeyFile, "alg", keys.Algorithm())
		}
		s.keyIDs = keys.IDs()
	}
	// The store comes last of what can fail: loading the memory store's
	// snapshot consumes it, so from here on only Shutdown (which writes it
	// again) may end the gateway without losing its sessions.
	store := opts.Store
	var restored int
	if store == nil {
		var err error
		if store, restored, err = cfg.Session.NewStore(s.origin); err != nil {
			return nil, err
		}
	}
	store = session.Observe(store, s.metrics.StoreError)
	s.sessions = session.NewManager(store, cfg.Session)
	if restored > 0 {
		log.Info("restored the memory store from its snapshot and removed the file", "entries", restored, "file", cfg.Session.SnapshotFile)
	}
	s.issuer = session.NewIssuer(store, keys, strings.TrimSuffix(srv.public.String(), "/"), cfg.Tokens)
	s.issuer.MaxLoginsPerUser = cfg.Session.MaxLoginsPerUser
	s.sessions.OnCapped, s.issuer.OnCapped = s.metrics.LoginCapped, s.metrics.LoginCapped
	if opts.Now != nil {
		s.issuer.Now, s.sessions.Now = opts.Now, opts.Now
	}
	s.refreshes = newRefresher()
	s.starts = newStartLimiter(cfg.Session.MaxPendingPerClient, cfg.Session.MaxPending, session.PendingTTL, s.sessions.Now)
	s.holders = map[string]*wechat.Holder{}
	for _, app := range []wechat.App{s.oa, s.mp} {
		if app.AppID != "" {
			s.holders[app.AppID] = s.newHolder(app)
		}
	}
	s.app = s.newPublicApp()
	s.admin = s.newAdminApp()
	for _, app := range []*fiber.App{s.app, s.admin} {
		srv := app.Server()
		srv.ConnState = trackConnState
		// A response sent while stopping says so, so that its client does
		// not send another request on a connection about to close.
		srv.CloseOnShutdown = true
		// A head that does not parse would otherwise be quoted whole in
		// the error the gateway logs: its Authorization and Cookie too.
		srv.SecureErrorLogMessage = true
	}
	return s, nil
}

// App is the public listener's fiber app.
func (s *Server) App() *fiber.App { return s.app }

// AdminApp is the admin listener's fiber app.
func (s *Server) AdminApp() *fiber.App { return s.admin }

// Metrics returns the gateway's collectors.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

func (s *Server) newPublicApp() *fiber.App {
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler:          s.handleError,
		// Bodies stream to the upstream instead of sitting in memory.
		StreamRequestBody: true,
		// WeChat's User-Agent and cookies make headers long.
		ReadBufferSize:               16 << 10,
		ReadTimeout:                  2 * time.Minute,
		IdleTimeout:                  2 * time.Minute,
		Network:                      fiber.NetworkTCP,
		DisablePreParseMultipartForm: true,
		DisableDefaultContentType:    true,
	})
	// Order: recover, request ID, access log and metrics, the edge (strict
	// HTTP, one reading of the host), then the endpoints and the proxy
	// (STYLE.md 9).
	app.Use(recover.New())
	app.Use(s.requestIDMiddleware)
	app.Use(s.observe)
	app.Use(s.edge)
	p := s.prefix
	app.Get(p+"/start", s.start)
	app.Get(p+"/qr", s.qr)
	app.Get(p+"/callback", s.callback)
	app.Get(p+"/handoff", s.handoff)
	app.Get(p+"/logout", s.logoutPage)
	app.Post(p+"/logout", s.logout)
	app.Get(p+"/userinfo", s.userinfo)
	app.All(p+"/auth", s.forwardAuth)
	app.All(p+"/auth/*", s.forwardAuth)
	app.Get(p+"/jwks.json", s.jwks)
	app.Post(p+"/miniprogram/login", s.miniprogramLogin)
	app.Post(p+"/miniprogram/decrypt", s.miniprogramDecrypt)
	app.Post(p+"/miniprogram/phone", s.miniprogramPhone)
	app.Post(p+"/miniprogram/webview-ticket", s.webviewTicket)
	app.Post(p+"/app/login", s.appLogin)
	app.Post(p+"/token/refresh", s.tokenRefresh)
	app.Post(p+"/token/revoke", s.tokenRevoke)
	app.All(p, s.notFound)
	app.All(p+"/*", s.notFound)
	if s.verify.path != "" {
		app.Get(s.verify.path, func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
			return c.Send(s.verify.body)
		})
	}
	app.Use(s.forward)
	return app
}

func (s *Server) notFound(*fiber.Ctx) error { return fiber.ErrNotFound }

// Serve runs the public app on pub and the admin app on admin until one
// fails or Shutdown is called.
func (s *Server) Serve(pub, admin net.Listener) error {
	if every := s.cfg.Session.RefreshAhead; every > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSweeper = cancel
		go s.runSweeper(ctx, every)
	}
	if s.cfg.Server.WatchConfig && s.cfg.path != "" {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch = cancel
		go s.watchConfig(ctx, watchEvery)
	}
	errc := make(chan error, 2)
	go func() { errc <- s.app.Listener(hangupListener{drainListener{pub, s.pubConns}}) }()
	go func() { errc <- s.admin.Listener(drainListener{admin, s.adminConns}) }()
	return <-errc
}

// Drain marks the gateway as going away while it serves on: /readyz
// answers 503, so that load balancers stop sending it new connections,
// and every response closes its connection, so that keep-alive clients
// move to another replica. Shutdown drains too; call Drain first to give
// load balancers time ([server] shutdown_delay).
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown drains, stops accepting connections, closes at once every
// connection that is between requests (a request that races with that
// close is either answered or never read), and waits for the requests in
// flight and the WebSockets open until ctx ends; then it cuts those still
// running, closing their connections, and logs how many as a warning: a
// cut at the deadline is the configured outcome, not an error. Then it writes the memory store's
// snapshot if one is configured and closes the store. New consumed the
// snapshot, so a gateway that ends any other way loses its sessions: call
// Shutdown on every way out once New has returned, even if Serve never ran.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	if s.stopSweeper != nil {
		s.stopSweeper()
	}
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.pubConns.stopping.Store(true)
	s.adminConns.stopping.Store(true)
	if n := s.pubConns.busy(); n > 0 {
		s.log.Info("stopped accepting; waiting for the requests in flight", "requests", n)
	}
	idleDone := make(chan struct{})
	go closeIdleUntil(idleDone, 20*time.Millisecond, s.pubConns, s.adminConns)
	s.refreshes.shut(ctx)
	err := errors.Join(s.app.ShutdownWithContext(ctx), s.admin.ShutdownWithContext(ctx))
	close(idleDone)
	if err != nil && ctx.Err() != nil {
		// fasthttp leaves what still runs alone; end it here, so that no
		// request outlives the snapshot or the process exits under one.
		cut := s.pubConns.cut() + s.adminConns.cut()
		s.log.Warn("the shutdown's time ran out: cut the requests still in flight", "requests", cut, "cause", context.Cause(ctx).Error())
		err = nil
	}
	if n := s.tunnels.count(); n > 0 {
		s.log.Info("waiting for the WebSockets open to close", "websockets", n)
	}
	if n := s.tunnels.wait(ctx); n > 0 {
		s.log.Warn("closed the WebSockets still open at the end of the shutdown", "websockets", n, "cause", context.Cause(ctx).Error())
	}
	if file := s.cfg.Session.SnapshotFile; file != "" {
		n, saved, serr := s.sessions.SaveSnapshot(file, s.origin)
		if serr != nil {
			err = errors.Join(err, serr)
		} else if saved {
			s.log.Info("wrote the memory store's snapshot", "entries", n, "file", file)
		}
	}
	return errors.Join(err, s.sessions.Close())
}

// ctxKey types keep fiber Locals keys private (STYLE.md 9).
type ctxKey int

// requestKey holds the request's *request: the one Locals value, so that
// the ID, the route and what the edge read cost one allocation together.
const requestKey ctxKey = 0

func requestID(c *fiber.Ctx) string { return requestOf(c).id }

// setRoute names the route a request took, for logs and metrics.
func setRoute(c *fiber.Ctx, name string) { requestOf(c).route = name }

// requestIDMiddleware starts the request's record with its ID: a
// well-formed X-Request-ID from a trusted proxy, or a new one. The answer
// carries it; forward sets it on the request to the upstream.
func (s *Server) requestIDMiddleware(c *fiber.Ctx) error {
	r := &request{scheme: "http", trusted: s.trustedPeer(c)}
	if r.trusted {
		if v := c.Get(fiber.HeaderXRequestID); validRequestID(v) {
			r.id = strings.Clone(v)
		}
	}
	if r.id == "" {
		r.newID()
	}
	c.Locals(requestKey, r)
	c.Set(fiber.HeaderXRequestID, r.id)
	return c.Next()
}

func validRequestID(v string) bool {
	if v == "" || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

// newID gives r a new random ID, kept in r itself: no allocation of its own.
func (r *request) newID() {
	var b [16]byte
	_, _ = rand.Read(b[:])
	hex.Encode(r.idBuf[:], b[:])
	// idBuf is never written again, and the string keeps r alive.
	r.id = unsafe.String(&r.idBuf[0], len(r.idBuf))
}

// observe logs and counts every request. It hands errors to handleError
// itself so the status it records is the one sent.
func (s *Server) observe(c *fiber.Ctx) error {
	if shutOut(c.Context()) {
		return nil
	}
	start := time.Now()
	if err := c.Next(); err != nil {
		if herr := s.handleError(c, err); herr != nil {
			return herr
		}
	}
	if s.draining.Load() {
		c.Context().SetConnectionClose()
	}
	d := time.Since(start)
	r := requestOf(c)
	route := r.route
	if route == "" {
		route = "wxgate"
	}
	status := c.Response().StatusCode()
	s.metrics.Request(route, status, d)
	if s.log.Enabled(c.UserContext(), slog.LevelInfo) {
		s.accessLine(c, r, route, status, d)
	}
	return nil
}

// accessLine logs the request's one access line. Its attributes are
// strings and numbers the request already holds: the line costs the
// handler's formatting and the one slice slog keeps beyond five.
func (s *Server) accessLine(c *fiber.Ctx, r *request, route string, status int, d time.Duration) {
	// bytes_in is the request's Content-Length (0 without a body, -1
	// when chunked); bytes_out the body sent, or the Content-Length of a
	// streamed one (-1: unknown, chunked).
	in := c.Request().Header.ContentLength()
	if in == -2 {
		in = 0
	}
	resp := c.Response()
	out := resp.Header.ContentLength()
	if !resp.IsBodyStream() {
		out = len(resp.Body())
	} else if out < 0 {
		out = -1
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", r.id),
		slog.String("client", r.clientString()),
		slog.String("method", c.Method()),
		// The path only: queries carry codes and states.
		slog.String("path", string(c.Request().URI().PathOriginal())),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("upstream", r.upstream),
		slog.Int("bytes_in", in),
		slog.Int("bytes_out", out),
		{},
	}
	n := len(attrs) - 1
	if u, ok := s.logUser(r, r.who.id); ok {
		attrs[n] = slog.String("user", u)
		n++
	}
	s.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request", attrs[:n]...)
}

// clientAddr is the client's address: the peer's, or, from a trusted proxy,
// the right-most untrusted address of X-Forwarded-For.
func (s *Server) clientAddr(c *fiber.Ctx, trusted bool) netip.Addr {
	peer := remoteAddr(c)
	if !trusted {
		return peer
	}
	xff := c.Get(fiber.HeaderXForwardedFor)
	parts := strings.Split(xff, ",")
	for i := len(parts) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !s.isTrusted(a) {
			return a
		}
		peer = a
	}
	return peer
}

func remoteAddr(c *fiber.Ctx) netip.Addr {
	a, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return a.Unmap()
}

func (s *Server) trustedPeer(c *fiber.Ctx) bool { return s.isTrusted(remoteAddr(c)) }

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
