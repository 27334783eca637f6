package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/net/publicsuffix"

	"github.com/wxgate/wxgate/internal/secret"
	"github.com/wxgate/wxgate/policies"
	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

// Config is gateway.toml: one struct, decoded strictly.
type Config struct {
	Server    ServerConfig        `toml:"server"`
	Log       LogConfig           `toml:"log"`
	Session   session.Config      `toml:"session"`
	Tokens    session.TokenConfig `toml:"tokens"`
	WeChat    wechat.Config       `toml:"wechat"`
	Policy    policies.Config     `toml:"policy"`
	Routes    []policies.Rule     `toml:"route"`
	Upstreams []Upstream          `toml:"upstream"`

	// What Provision made of the config besides the fields above: engine
	// is Routes and Policy compiled (nil if they did not compile), verify
	// the official account's verify file, read.
	engine *policies.Engine
	verify verifyFile
	// path and source are the file LoadConfig read and its bytes: what a
	// reload reads again, and where it finds the lines of its problems.
	path   string
	source []byte
	// fromEnv maps the keys a WXGATE_* variable set ("server.listen") to
	// the variable, for the problems with them.
	fromEnv map[string]string
	// provisioned says that Provision ran (Validate needs it); ready, that
	// it met no problem (New needs it).
	provisioned, ready bool
}

// verifyFile is the official account's domain-verification file, served
// at path on the public listener.
type verifyFile struct {
	path string
	body []byte
}

// LogConfig is the [log] section. The level stays [server] log_level.
type LogConfig struct {
	// Format is "json" (one object a line) or "text" (slog's key=value).
	// Empty: json for `wxgate serve`, text for `wxgate dev`.
	Format string `toml:"format"`
	// Users is how a user appears in log lines (the user key of access
	// and auth lines): "hashed", a pseudonym (the first 16 hex digits of
	// an HMAC-SHA-256 of X-Forwarded-User, keyed from the signing key:
	// the same user gives the same value on every replica while that key
	// signs); "plain", the X-Forwarded-User value itself; "none", no user
	// key at all. Default: "hashed".
	Users string `toml:"users"`
}

// Log formats and user renderings ([log] format, users).
const (
	LogJSON = "json"
	LogText = "text"

	usersHashed = "hashed"
	usersPlain  = "plain"
	usersNone   = "none"
)

// loopbackListen reports whether a listener on addr (host:port) accepts
// connections from this host only: a loopback IP or localhost. An empty
// host or 0.0.0.0 listens everywhere; any other name may resolve anywhere.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ServerConfig is the [server] section.
type ServerConfig struct {
	// Listen is the public listener's address. Default: ":8080".
	Listen string `toml:"listen"`
	// AdminListen is the admin listener's address (/metrics, /healthz,
	// /readyz). Default: "127.0.0.1:9090". Keep it off public interfaces.
	AdminListen string `toml:"admin_listen"`
	// PublicURL is the URL browsers use to reach wxgate, scheme and host
	// (the callback URL is built on it). Required. With https, cookies are
	// Secure and take the __Host- prefix.
	PublicURL string `toml:"public_url"`
	// Prefix is where wxgate's own endpoints live. Default: "/_wxgate".
	Prefix string `toml:"prefix"`
	// AllowedRedirectHosts lists hosts that rd may name besides the public
	// URL's origin: exact, or ".example.com" for its subdomains, with
	// ":port" when the target is not on its scheme's default port. They
	// must be https unless public_url is http. Default: none.
	AllowedRedirectHosts []string `toml:"allowed_redirect_hosts"`
	// AuthHost is the host (with ":port" when not the public URL's scheme's
	// default) that WeChat's callback comes to: the official account's one
	// authorization domain. A login started on a handoff host goes through
	// it and comes back with a one-time ticket (DESIGN.md "Many hosts, one
	// callback domain"). Default: the public URL's host.
	AuthHost string `toml:"auth_host"`
	// HandoffHosts lists the other hosts this gateway serves whose logins
	// go through auth_host: exact, or ".example.com" for its subdomains,
	// with ":port" as in allowed_redirect_hosts, on the public URL's
	// scheme. They are redirect targets too. A login returning to one gets
	// a 30-second single-use ticket for it, unless [session] cookie_domain
	// covers it and auth_host. Default: none.
	HandoffHosts []string `toml:"handoff_hosts"`
	// TrustedProxies lists CIDRs whose X-Forwarded-* and X-Request-ID
	// headers are believed. Default: none (every peer is a client).
	TrustedProxies []string `toml:"trusted_proxies"`
	// AdminHosts lists the host names, besides IP addresses, localhost and
	// admin_listen's host, that the admin listener answers to: exact, or
	// ".example.com" for subdomains. Requests for any other name get 403
	// (a defence against DNS rebinding). Default: none.
	AdminHosts []string `toml:"admin_hosts"`
	// LogLevel is debug, info, warn or error. Default: info.
	LogLevel string `toml:"log_level"`
	// AdminTokenEnv names an environment variable holding a secret that
	// /app-token and /sessions on the admin listener require as
	// "Authorization: Bearer <secret>". Empty: no token, which Validate
	// allows only with admin_listen on loopback. /metrics, /healthz,
	// /readyz stay open.
	AdminTokenEnv string `toml:"admin_token_env"`
	// ShutdownDelay is how long the gateway goes on serving after SIGTERM
	// or SIGINT while /readyz answers 503, so that load balancers take it
	// out of rotation before its listener closes (issue 9). Nil (the key
	// absent) means 5s; zero means none. `wxgate dev` uses zero.
	ShutdownDelay *time.Duration `toml:"shutdown_delay"`
	// ShutdownTimeout bounds the wait for requests in flight once the
	// listener has closed; those still running then are cut. At most 1h;
	// zero means the default: 25s (with the delay, Kubernetes' default 30s
	// grace period).
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/ on
	// the admin listener, behind admin_token_env like the admin API, for
	// finding where a busy gateway spends its time. Default: false.
	Pprof bool `toml:"pprof"`
	// WatchConfig reloads the config file when its content changes, as
	// SIGHUP does: it is read every second and compared by hash, so an
	// editor's rename-over and a Kubernetes ConfigMap's symlink swap are
	// seen like a write in place. Only routes, [policy], upstreams and
	// allowed_redirect_hosts change live; a file that changes anything
	// else, or has any problem, is refused and the running config stays.
	// Changing this key itself takes a restart. Default: false.
	WatchConfig bool `toml:"watch_config"`
	// MaxWebSockets bounds the WebSockets open through this replica, and
	// MaxWebSocketsPerClient those of one client (an IPv4 address or an
	// IPv6 /64): each holds a connection to the upstream for as long as
	// the client likes, so without a bound one client could take them
	// all. A network (IPv4 /24, IPv6 /48) holds at most a tenth of
	// MaxWebSockets (at least MaxWebSocketsPerClient). A handshake past
	// a bound is refused (429 for the client's or network's, 503 for the
	// replica's) before the upstream is asked. Defaults: 10000 and 100.
	MaxWebSockets          int `toml:"max_websockets"`
	MaxWebSocketsPerClient int `toml:"max_websockets_per_client"`
	// WebSocketWriteTimeout is how long a write to either side of a
	// WebSocket may wait with the peer taking no byte: a peer that stops
	// reading while the other side sends ends the WebSocket then (within
	// twice that), instead of holding it open for ever; a slow reader
	// keeps it.
	// 1s..10m. Default: 60s (nginx's proxy_send_timeout).
	WebSocketWriteTimeout time.Duration `toml:"websocket_write_timeout"`

	// Dev turns on what only `wxgate dev` may do: the "continue as if inside
	// WeChat" link. Never set from the file.
	Dev bool `toml:"-"`

	// What Provision made of the keys above; zero before it, and where a
	// key did not parse.
	public *url.URL // PublicURL
	// publicAuthority is the public URL's host[:port], normalized and
	// without the scheme's default port: what an origin is compared to.
	publicAuthority string
	// authAuthority is AuthHost normalized like publicAuthority, or
	// publicAuthority when AuthHost is empty.
	authAuthority string
	trusted       []netip.Prefix // TrustedProxies
	logLevel      slog.Level     // LogLevel
	adminToken    secret.Secret  // AdminTokenEnv's value
}

// Upstream is one [[upstream]]: an app wxgate forwards to.
type Upstream struct {
	// Name is what routes refer to. Required.
	Name string `toml:"name"`
	// URL is the upstream's base, http or https, scheme and host only
	// ("http://127.0.0.1:9400"). Required.
	URL string `toml:"url"`
	// Timeout is how long the upstream may stay silent, waiting for its
	// headers or between body bytes, before the request fails with 504.
	// Default: 30s.
	Timeout time.Duration `toml:"timeout"`
	// KeepAliveIdle is how long a connection to the upstream may stay idle
	// in the pool before wxgate closes it. Keep it below the upstream's
	// own keep-alive timeout (Node and Apache 5 s, nginx 75 s); a shorter
	// "Keep-Alive: timeout=N" from the upstream lowers it per connection.
	// Default: 4s.
	KeepAliveIdle time.Duration `toml:"keepalive_idle"`

	// URL as Provision parsed it: scheme is "http" or "https", addr is
	// host:port with the scheme's default port filled in, and host is the
	// name TLS verifies. Empty before Provision and when URL did not parse.
	scheme, addr, host string
}

// provision parses URL. An empty URL is Validate's to report.
func (u *Upstream) provision() error {
	u.scheme, u.addr, u.host = "", "", ""
	if u.URL == "" {
		return nil
	}
	pu, err := url.Parse(u.URL)
	if err != nil {
		// url.Parse's error quotes the URL, whose user part may hold a
		// password: the problem is logged.
		return errors.New("url: not a URL; it must be http(s)://host[:port]")
	}
	if (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || (pu.Path != "" && pu.Path != "/") {
		return fmt.Errorf("url: %q must be http(s)://host[:port]", pu.Redacted())
	}
	port := pu.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[pu.Scheme]
	}
	u.scheme, u.addr, u.host = pu.Scheme, net.JoinHostPort(pu.Hostname(), port), pu.Hostname()
	return nil
}

var upstreamNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// upstreamKey names the i'th [[upstream]] in a problem, with its name as
// routes have theirs ("upstream[1] (api)") when that is a valid one.
func upstreamKey(i int, name string) string {
	key := fmt.Sprintf("upstream[%d]", i)
	if upstreamNameRE.MatchString(name) {
		key += " (" + name + ")"
	}
	return key
}

// The drain's defaults: together they fit Kubernetes' default
// terminationGracePeriodSeconds (30).
const (
	DefaultShutdownDelay   = 5 * time.Second
	DefaultShutdownTimeout = 25 * time.Second
)

// ShutdownDelayOrDefault is s.ShutdownDelay, or its default when unset.
func (s ServerConfig) ShutdownDelayOrDefault() time.Duration {
	if s.ShutdownDelay == nil {
		return DefaultShutdownDelay
	}
	return *s.ShutdownDelay
}

// EnvPrefix starts the environment variables that override keys:
// WXGATE_SERVER_LISTEN overrides [server] listen, and so on.
const EnvPrefix = "WXGATE_"

// LoadConfig reads path, applies environment overrides from env (KEY=VALUE
// pairs, as os.Environ gives), and fills defaults. It does not validate.
// Unknown or misspelt keys are errors naming them; warnings are returned
// for things that work but should not be done (literal secrets).
func LoadConfig(path string, env []string) (*Config, []string, error) {
	cfg, _, warnings, err := loadConfig(path, env)
	return cfg, warnings, err
}

// loadConfig is LoadConfig that also returns the bytes it read, on
// failure too (nil if the file could not be read), for reload to place
// its errors.
func loadConfig(path string, env []string) (*Config, []byte, []string, error) {
	cfg, src, warnings, err := loadConfigAll(path, env)
	if err != nil {
		return nil, src, nil, err
	}
	return cfg, src, warnings, nil
}

// loadConfigAll is loadConfig that returns the config also when its only
// problems are unknown keys and variables or bad variable values (nil
// only when the file could not be read or decoded), with those problems
// left out of it: Check goes on to name every other problem too.
func loadConfigAll(path string, env []string) (*Config, []byte, []string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg := Config{path: path, source: src}
	md, err := toml.Decode(string(src), &cfg)
	if err != nil {
		return nil, src, nil, fmt.Errorf("%s: %w", path, hideSecretValue(err))
	}
	var errs []error
	for _, text := range append(unknownKeys(md, src, &cfg), unitlessDurations(src, &cfg)...) {
		errs = append(errs, fmt.Errorf("%s: %s", path, text))
	}
	if err := applyEnv(&cfg, env); err != nil {
		errs = append(errs, err)
	}
	cfg.SetDefaults()
	return &cfg, src, cfg.warnings(), errors.Join(errs...)
}

// hideSecretValue drops the decoder's message from a syntax error in the
// value of a literal secret key: it quotes what it found of the value ("expected
// value but found ..."), an AppSecret pasted without its quotes, and the
// error is printed and logged. The line and the key still place it.
func hideSecretValue(err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) || !strings.HasSuffix("."+pe.LastKey, ".secret") {
		return err
	}
	pe.Message = "the value is not valid TOML (a quoted string?); not shown, since it is a secret"
	return pe
}

// plainPrefix is a [server] prefix the router takes literally and no
// normalization changes: ":" "*" "+" "?" are the router's parameters and
// wildcards ("/:tenant" would make every /x/callback the gateway's), and
// a space, "#", "%", an empty, "." or ".." segment would leave the
// gateway's own endpoints unreachable or readable two ways.
var plainPrefix = regexp.MustCompile(`^(/[A-Za-z0-9_~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*|/\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|/\.\.[A-Za-z0-9._~-]+)+$`)

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	s := &c.Server
	if s.Listen == "" {
		s.Listen = ":8080"
	}
	if s.AdminListen == "" {
		s.AdminListen = "127.0.0.1:9090"
	}
	if s.Prefix == "" {
		s.Prefix = "/_wxgate"
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if c.Log.Users == "" {
		c.Log.Users = usersHashed
	}
	if s.ShutdownDelay == nil {
		d := DefaultShutdownDelay
		s.ShutdownDelay = &d
	}
	if s.ShutdownTimeout == 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.MaxWebSockets == 0 {
		s.MaxWebSockets = 10000
	}
	if s.MaxWebSocketsPerClient == 0 {
		s.MaxWebSocketsPerClient = 100
	}
	if s.WebSocketWriteTimeout == 0 {
		s.WebSocketWriteTimeout = time.Minute
	}
	c.Session.SetDefaults()
	c.Tokens.SetDefaults()
	c.WeChat.SetDefaults()
	for i := range c.Upstreams {
		if c.Upstreams[i].Timeout == 0 {
			c.Upstreams[i].Timeout = 30 * time.Second
		}
		if c.Upstreams[i].KeepAliveIdle == 0 {
			c.Upstreams[i].KeepAliveIdle = 4 * time.Second
		}
	}
	if c.Policy.Upstream == "" && len(c.Upstreams) > 0 {
		c.Policy.Upstream = c.Upstreams[0].Name
	}
}

// namedApp is an app section with its key path.
type namedApp struct {
	key string
	app *wechat.AppConfig
}

func (c *Config) apps() []namedApp {
	return []namedApp{
		{"wechat.official_account", &c.WeChat.OfficialAccount},
		{"wechat.website", &c.WeChat.Website},
		{"wechat.miniprogram", &c.WeChat.MiniProgram},
		{"wechat.app", &c.WeChat.MobileApp},
	}
}

func (c *Config) warnings() []string {
	var w []string
	for _, na := range c.apps() {
		name, a := na.key, na.app
		if a.Secret != "" && a.SecretEnv == "" && a.SecretFile == "" {
			w = append(w, name+".secret: a literal secret in the config file; prefer secret_env or secret_file")
		}
	}
	for _, p := range c.Server.TrustedProxies {
		if n, err := netip.ParsePrefix(strings.TrimSpace(p)); err == nil && n.Bits() == 0 {
			w = append(w, fmt.Sprintf("server.trusted_proxies: %q trusts every address: any client sets its own address (and so escapes the per-client limits), host and scheme with X-Forwarded-*; list only your proxies", p))
		}
	}
	return w
}

// Provision turns the config into ready values, once (STYLE.md 4, after
// Caddy's Provisioner): it reads every secret (the apps' AppSecrets, the
// admin token, the Redis passwords and encryption key) and the official
// account's verify file, and parses the public URL, the trusted proxies,
// the log level, the upstreams' URLs and the routes (a compiled
// policies.Engine) into unexported fields that New wires as they are. It
// reports every source it cannot read and every value it cannot parse,
// each naming its key and never a secret's value, and goes on past them,
// so that Validate can check the rest: report both, as `wxgate check`,
// serve and dev do. Call it again after changing c.
//
// Provision only reads. What a start writes stays with New: the signing
// key (created when missing) and the memory store's snapshot (consumed as
// it is read), so that `wxgate check` leaves both alone.
func (c *Config) Provision() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	s := &c.Server
	s.public, s.publicAuthority = nil, ""
	if s.PublicURL != "" {
		u, authority, err := parsePublicURL(s.PublicURL)
		if err != nil {
			add("server.public_url: %q must be http(s)://host[:port] with no path", s.PublicURL)
		} else {
			s.public, s.publicAuthority = u, authority
		}
	}
	s.authAuthority = s.publicAuthority
	if s.AuthHost != "" && s.public != nil {
		_, authority, err := parseHost(s.AuthHost)
		if err != nil {
			add("server.auth_host: %q is not a host name (with an optional :port)", s.AuthHost)
		} else {
			s.authAuthority = withoutDefaultPort(s.public.Scheme, authority)
		}
	}
	s.trusted = nil
	for _, p := range s.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			add("server.trusted_proxies: %q is not an IP or CIDR", p)
			continue
		}
		s.trusted = append(s.trusted, pfx)
	}
	level, err := parseLevel(s.LogLevel)
	if err != nil {
		add("server.log_level: %v", err)
	}
	s.logLevel = level
	s.adminToken = ""
	if s.AdminTokenEnv != "" {
		// Unset or short is Validate's to report, with the rule.
		s.adminToken = secret.Secret(os.Getenv(s.AdminTokenEnv))
	}
	if err := c.Session.Provision(); err != nil {
		errs = append(errs, err)
	}
	if err := c.WeChat.Provision(); err != nil {
		errs = append(errs, err)
	}
	c.verify = verifyFile{}
	if f := c.WeChat.OfficialAccount.VerifyFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			add("wechat.official_account.verify_file: %v", err)
		} else {
			c.verify = verifyFile{path: "/" + baseName(f), body: b}
		}
	}
	for i := range c.Upstreams {
		if err := c.Upstreams[i].provision(); err != nil {
			add("%s.%w", upstreamKey(i, c.Upstreams[i].Name), err)
		}
	}
	if c.engine, err = policies.New(c.Routes, c.Policy); err != nil {
		errs = append(errs, err)
	}
	c.provisioned, c.ready = true, len(errs) == 0
	return errors.Join(errs...)
}

// errNotProvisioned is Validate's and New's answer for a config that
// Provision has not prepared.
var errNotProvisioned = errors.New("proxy: the config is not provisioned (call Config.Provision first)")

// Validate reports every problem Provision leaves, one per line, each
// naming its key: what is missing, out of range or inconsistent. It checks
// the values Provision made and reads nothing (no file, no environment
// variable), so its answer depends on c alone; it changes nothing. A key
// whose value Provision could not read or parse is not reported again.
func (c *Config) Validate() error {
	if !c.provisioned {
		return errNotProvisioned
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	s := c.Server
	if s.PublicURL == "" {
		add("server.public_url: required (the URL browsers use to reach wxgate)")
	}
	if !strings.HasPrefix(s.Prefix, "/") || strings.HasSuffix(s.Prefix, "/") || len(s.Prefix) < 2 {
		add("server.prefix: %q must start with / and not end with /", s.Prefix)
	} else if !plainPrefix.MatchString(s.Prefix) {
		add("server.prefix: %q: each segment may hold only letters, digits and - . _ ~ (and is not . or ..)", s.Prefix)
	}
	for _, l := range []struct{ key, addr string }{{"server.listen", s.Listen}, {"server.admin_listen", s.AdminListen}} {
		if !isListenAddr(l.addr) {
			add("%s: %q is not host:port (\":8080\", \"127.0.0.1:9090\")", l.key, l.addr)
		}
	}
	if s.Listen == s.AdminListen {
		add("server.admin_listen: must differ from server.listen")
	}
	for _, h := range s.AllowedRedirectHosts {
		if _, _, err := parseHost(strings.TrimPrefix(h, ".")); err != nil || strings.HasSuffix(h, ".") {
			add("server.allowed_redirect_hosts: %q is not a host name (with an optional :port)", h)
		}
	}
	for _, h := range s.HandoffHosts {
		if _, _, err := parseHost(strings.TrimPrefix(h, ".")); err != nil || strings.HasSuffix(h, ".") {
			add("server.handoff_hosts: %q is not a host name (with an optional :port)", h)
		}
	}
	if d := c.Session.CookieDomain; d != "" {
		name, _, err := parseHost(strings.TrimPrefix(d, "."))
		if err != nil || strings.Contains(d, ":") || strings.HasSuffix(d, ".") || !strings.Contains(name, ".") || isIP(name) {
			add("session.cookie_domain: %q is not a domain name such as \".example.com\"", d)
		} else if suffix, _ := publicsuffix.PublicSuffix(strings.ToLower(name)); suffix == strings.ToLower(name) {
			// Browsers drop a cookie set for a public suffix: every login
			// would loop.
			add("session.cookie_domain: %q is a public suffix, which browsers refuse a cookie for; name your own domain (\".example.com.cn\")", d)
		}
	}
	for _, h := range s.AdminHosts {
		if _, _, err := parseHost(strings.TrimPrefix(h, ".")); err != nil || strings.Contains(h, ":") {
			add("server.admin_hosts: %q is not a host name", h)
		}
	}
	if d := s.ShutdownDelayOrDefault(); d < 0 || d > 5*time.Minute {
		add("server.shutdown_delay: %s is outside 0..5m", d)
	}
	if s.ShutdownTimeout < 0 || s.ShutdownTimeout > time.Hour {
		add("server.shutdown_timeout: %s is outside 0..1h (0: the default, 25s)", s.ShutdownTimeout)
	}
	if s.MaxWebSockets < 1 {
		add("server.max_websockets: %d must be at least 1", s.MaxWebSockets)
	}
	if s.MaxWebSocketsPerClient < 1 || s.MaxWebSocketsPerClient > s.MaxWebSockets {
		add("server.max_websockets_per_client: %d must be between 1 and max_websockets", s.MaxWebSocketsPerClient)
	}
	if s.WebSocketWriteTimeout < time.Second || s.WebSocketWriteTimeout > 10*time.Minute {
		add("server.websocket_write_timeout: %s is outside 1s..10m", s.WebSocketWriteTimeout)
	}
	switch c.Log.Format {
	case "", LogJSON, LogText:
	default:
		add("log.format: %q is not json or text", c.Log.Format)
	}
	switch c.Log.Users {
	case usersHashed, usersPlain, usersNone:
	default:
		add("log.users: %q is not hashed, plain or none", c.Log.Users)
	}
	if s.AdminTokenEnv == "" && isListenAddr(s.AdminListen) && !loopbackListen(s.AdminListen) {
		// /app-token hands out WeChat app access tokens and /sessions ends
		// anyone's logins: beyond loopback, every host that reaches the
		// port could.
		add("server.admin_listen: %q is reachable beyond this host, so the admin API (/app-token, /sessions) needs server.admin_token_env", s.AdminListen)
	}
	if e := s.AdminTokenEnv; e != "" && s.adminToken == "" {
		add("server.admin_token_env: %w", &secret.UnsetError{Var: e})
	} else if e != "" && len(s.adminToken) < 16 {
		add("server.admin_token_env: environment variable %s must hold at least 16 characters", secret.EnvName(e))
	}
	if err := c.Session.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Tokens.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, base := range []struct{ key, v string }{{"wechat.api_base", c.WeChat.APIBase}, {"wechat.open_base", c.WeChat.OpenBase}} {
		if u, err := url.Parse(base.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("%s: %q is not an http(s) URL", base.key, base.v)
		}
	}
	if c.WeChat.Timeout < 0 {
		add("wechat.timeout: must not be negative")
	}
	if src := c.WeChat.AppTokenSource; src != "stable_token" && src != "token" {
		add("wechat.app_token_source: %q is not stable_token or token", src)
	}
	configured := 0
	for _, na := range c.apps() {
		name, a := na.key, na.app
		if !a.Configured() {
			if a.SecretEnv != "" || a.SecretFile != "" || a.Secret != "" {
				add("%s.appid: required when a secret is given", name)
			}
			continue
		}
		configured++
		if !strings.HasPrefix(a.AppID, "wx") {
			add("%s.appid: %q does not look like an appid (wx...)", name, a.AppID)
		}
		if a.VerifyFile != "" && name != "wechat.official_account" {
			add("%s.verify_file: only the official account has one", name)
		}
	}
	if configured == 0 {
		add("wechat: no app configured (set [wechat.official_account] appid)")
	}
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		key := upstreamKey(i, u.Name)
		if u.Name == "" {
			add("%s.name: required", key)
		} else if !upstreamNameRE.MatchString(u.Name) {
			// The name is the identity assertion's aud; keep it a plain word.
			add("%s.name: %q must be letters, digits, '.', '_' or '-'", key, u.Name)
		} else if names[u.Name] {
			add("%s.name: duplicate upstream %q", key, u.Name)
		}
		names[u.Name] = true
		if u.URL == "" {
			add("%s.url: required (http(s)://host[:port])", key)
		}
		if u.Timeout < 0 {
			add("%s.timeout: must not be negative", key)
		}
		if u.KeepAliveIdle < 0 {
			add("%s.keepalive_idle: must not be negative", key)
		}
	}
	if len(c.Upstreams) == 0 {
		add("upstream: at least one [[upstream]] is required")
	}
	if c.Policy.Upstream != "" && !names[c.Policy.Upstream] && len(c.Upstreams) > 0 {
		add("policy.upstream: no [[upstream]] named %q", c.Policy.Upstream)
	}
	for i, r := range c.Routes {
		if r.Upstream != "" && !names[r.Upstream] {
			add("%s.upstream: no [[upstream]] named %q", withName(fmt.Sprintf("route[%d]", i), r.Name), r.Upstream)
		}
	}
	return errors.Join(errs...)
}

// Engine is the routes and [policy] compiled by Provision: nil before it,
// and when they did not compile.
func (c *Config) Engine() *policies.Engine { return c.engine }

// LogLevel is the log level Provision parsed: info before it.
func (c *Config) LogLevel() slog.Level { return c.Server.logLevel }

// parsePublicURL parses [server] public_url, which must be
// http(s)://host[:port] with no path, and returns it with its authority
// (publicAuthority).
func parsePublicURL(s string) (*url.URL, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, "", errors.New("not http(s)://host[:port] with no path")
	}
	_, authority, err := parseHost(u.Host)
	if err != nil {
		return nil, "", err
	}
	return u, withoutDefaultPort(u.Scheme, authority), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return a.Prefix(a.BitLen())
}

// applyEnv sets every key that has a WXGATE_<SECTION>_<KEY> variable in env.
// Keys inside [[route]] and [[upstream]] have no variables: an array of
// tables has no stable name to give one.
func applyEnv(cfg *Config, env []string) error {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) {
			vars[k] = v
		}
	}
	if len(vars) == 0 {
		return nil
	}
	var errs []error
	known := map[string]bool{}
	walkKeys(reflect.ValueOf(cfg).Elem(), nil, func(path []string, f reflect.Value) {
		name := EnvPrefix + strings.ToUpper(strings.Join(path, "_"))
		known[name] = true
		v, ok := vars[name]
		if !ok {
			return
		}
		if err := setFromString(f, v); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", name, strings.Join(path, "."), err))
			return
		}
		if cfg.fromEnv == nil {
			cfg.fromEnv = map[string]string{}
		}
		cfg.fromEnv[strings.Join(path, ".")] = name
	})
	return errors.Join(append(errs, unknownEnv(cfg, vars, known)...)...)
}

// walkKeys calls fn for every settable scalar or string-list key under v.
func walkKeys(v reflect.Value, path []string, fn func([]string, reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := strings.Split(sf.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" || !sf.IsExported() {
			continue
		}
		f := v.Field(i)
		p := append(append([]string{}, path...), tag)
		switch {
		case f.Kind() == reflect.Struct:
			walkKeys(f, p, fn)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() != reflect.String:
			// [[route]], [[upstream]]: no variables.
		default:
			fn(p, f)
		}
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

func setFromString(f reflect.Value, s string) error {
	switch {
	case f.Kind() == reflect.Pointer && f.Type().Elem() == durationType:
		// An optional duration whose zero is a value ([server] shutdown_delay,
		// [session] refresh_wait): set, even to 0, it is no longer the default.
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.Set(reflect.ValueOf(&d))
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case f.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(n))
	case f.Kind() == reflect.Slice:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
