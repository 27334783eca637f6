// Package metrics defines wxgate's Prometheus collectors. Other packages
// report through func hooks or the methods here; the admin listener (in
// proxy) serves Handler at /metrics.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors of one gateway, in a registry of its own so
// that several gateways can run in one test process.
type Metrics struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	// requestCells (requestKey -> *requestCells) and upstreamCells
	// (upstreamKey -> prometheus.Observer) keep the children requests
	// record in.
	requestCells, upstreamCells sync.Map
	requestDuration             *prometheus.HistogramVec
	upstreamDuration            *prometheus.HistogramVec
	upstreamRetries             *prometheus.CounterVec
	upstreamCuts                *prometheus.CounterVec
	logins                      *prometheus.CounterVec
	loginKeys                   *prometheus.CounterVec
	wechatCalls                 *prometheus.CounterVec
	wechatDuration              *prometheus.HistogramVec
	storeErrors                 *prometheus.CounterVec
	refreshes                   *prometheus.CounterVec
	appTokenExpiry              *prometheus.GaugeVec
	appTokenAge                 *prometheus.GaugeVec
	appTokenProblem             *prometheus.GaugeVec
	startsRefused               *prometheus.CounterVec
	loginsCapped                *prometheus.CounterVec
	configReloads               *prometheus.CounterVec
	configLastSuccess           prometheus.Gauge
	configLastReload            prometheus.Gauge
	websockets                  *prometheus.GaugeVec
}

// New registers wxgate's collectors. activeSessions, if not nil, is read at
// every scrape for wxgate_active_sessions.
func New(activeSessions func() float64) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_requests_total",
			Help: "Requests on the public listener by route and status code.",
		}, []string{"route", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxgate_request_duration_seconds",
			Help:    "Time to answer a request on the public listener, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxgate_upstream_duration_seconds",
			Help:    "Time until an upstream's response headers, by upstream and outcome.",
			Buckets: prometheus.DefBuckets,
		}, []string{"upstream", "outcome"}),
		upstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_upstream_retries_total",
			Help: "Requests sent again, once, on a new connection because the pooled one could not carry them, by upstream and reason (closed: the upstream had closed it before the request went out; expired: idle past keepalive_idle or the upstream's Keep-Alive timeout; reset: it closed after an idempotent request without a body went out, before any answer byte).",
		}, []string{"upstream", "reason"}),
		upstreamCuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_upstream_responses_cut_total",
			Help: "Upstream answers whose body ended before its Content-Length or last chunk (reason closed: the connection ended; timeout: the upstream went silent), by upstream. The client got a 502 or an aborted connection, never a complete-looking answer.",
		}, []string{"upstream", "reason"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_logins_total",
			Help: "Completed login attempts by flow (oa, qr, miniprogram, app) and result.",
		}, []string{"flow", "result"}),
		loginKeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_login_identities_total",
			Help: "Successful logins by flow and the key X-Forwarded-User carries (unionid: the person is one user across the official account, website app, mini program and mobile app; openid: the app is not bound to an open-platform account, so this login is a user of its app only).",
		}, []string{"flow", "key"}),
		wechatCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_wechat_api_calls_total",
			Help: "WeChat API calls by endpoint and errcode (0 success, unavailable when no answer).",
		}, []string{"endpoint", "errcode"}),
		wechatDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxgate_wechat_api_duration_seconds",
			Help:    "WeChat API call duration by endpoint.",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_store_errors_total",
			Help: "Session store failures by operation (each answered 503, never a logout).",
		}, []string{"op"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_token_refreshes_total",
			Help: "WeChat token refreshes by kind (sns, app) and result.",
		}, []string{"kind", "result"}),
		appTokenExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxgate_app_token_expiry_timestamp_seconds",
			Help: "When the current app access token of each appid expires (Unix time).",
		}, []string{"appid"}),
		appTokenAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxgate_app_token_fetched_timestamp_seconds",
			Help: "When the current app access token of each appid was fetched (Unix time); its age is time() minus this.",
		}, []string{"appid"}),
		appTokenProblem: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxgate_app_token_blocked",
			Help: "1 while fetching an appid's app access token fails with an errcode that needs a person (40164 IP whitelist, 89501-89507 a new IP to confirm, 45009 daily quota, 40125 secret, 40243 secret frozen, 50004/50007 banned or frozen), by errcode.",
		}, []string{"appid", "errcode"}),
		startsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_login_starts_refused_total",
			Help: "Browser logins refused with 429 before any state was stored, by reason (client: the client address's pending logins; network: its /24 or /48's share while half the total is in flight; total: this replica's).",
		}, []string{"reason"}),
		loginsCapped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_logins_capped_total",
			Help: "Logins ended because a newer login took their person past [session] max_logins_per_user, by kind (session, token_family).",
		}, []string{"kind"}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxgate_config_reloads_total",
			Help: "Reloads of gateway.toml (SIGHUP or [server] watch_config) by result: ok (the new routes, [policy], upstreams and allowed_redirect_hosts serve) or error (the file was refused and the running config stays; the log names each problem).",
		}, []string{"result"}),
		configLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxgate_config_last_reload_success",
			Help: "1 if the last reload of gateway.toml (or the start) succeeded, 0 if it was refused and an older config serves.",
		}),
		configLastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxgate_config_last_reload_timestamp_seconds",
			Help: "When gateway.toml was last read, at the start or by a reload whatever its result (Unix time).",
		}),
		websockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxgate_websockets_open",
			Help: "WebSocket connections tunnelled to each upstream now (after the upstream's 101, until either side closes).",
		}, []string{"upstream"}),
	}
	// Both results from the start, so that an alert on the error rate has
	// a series before the first failure.
	m.configReloads.WithLabelValues("ok")
	m.configReloads.WithLabelValues("error")
	m.Registry.MustRegister(
		m.requests, m.requestDuration, m.upstreamDuration, m.upstreamRetries, m.upstreamCuts, m.logins, m.loginKeys, m.wechatCalls, m.wechatDuration,
		m.storeErrors, m.refreshes, m.appTokenExpiry, m.appTokenAge, m.appTokenProblem, m.startsRefused,
		m.loginsCapped, m.configReloads, m.configLastSuccess, m.configLastReload, m.websockets,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if activeSessions != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wxgate_active_sessions",
			Help: "Browser sessions currently stored.",
		}, activeSessions))
	}
	return m
}

// Request records one answered request.
func (m *Metrics) Request(route string, code int, d time.Duration) {
	k := requestKey{route, code}
	c, ok := m.requestCells.Load(k)
	if !ok {
		c, _ = m.requestCells.LoadOrStore(k, &requestCells{
			count: m.requests.WithLabelValues(route, strconv.Itoa(code)),
			dur:   m.requestDuration.WithLabelValues(route),
		})
	}
	rc := c.(*requestCells)
	rc.count.Inc()
	rc.dur.Observe(d.Seconds())
}

// requestKey and upstreamKey name the children of the vectors every
// request records in; requestCells and upstreamCells keep them, so that a
// request finds them without formatting its status and hashing its labels
// (WithLabelValues). Routes, upstreams, statuses and outcomes come from
// the configuration and the code, never from a request, so they are few.
type (
	requestKey struct {
		route string
		code  int
	}
	requestCells struct {
		count prometheus.Counter
		dur   prometheus.Observer
	}
	upstreamKey struct{ name, outcome string }
)

// Upstream records the time an upstream took to answer (outcome: ok,
// timeout, error, or client_error when the client's request body broke).
func (m *Metrics) Upstream(name, outcome string, d time.Duration) {
	k := upstreamKey{name, outcome}
	o, ok := m.upstreamCells.Load(k)
	if !ok {
		o, _ = m.upstreamCells.LoadOrStore(k, m.upstreamDuration.WithLabelValues(name, outcome))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

// UpstreamRetry counts a request sent again on a new connection (reason:
// closed, expired, reset).
func (m *Metrics) UpstreamRetry(name, reason string) {
	m.upstreamRetries.WithLabelValues(name, reason).Inc()
}

// UpstreamCut counts an upstream answer body that ended early (reason:
// closed, timeout).
func (m *Metrics) UpstreamCut(name, reason string) {
	m.upstreamCuts.WithLabelValues(name, reason).Inc()
}

// Login records the end of a login attempt.
func (m *Metrics) Login(flow, result string) {
	m.logins.WithLabelValues(flow, result).Inc()
}

// LoggedIn records a successful login by flow, and whether its identity
// has a unionid.
func (m *Metrics) LoggedIn(flow string, unionid bool) {
	m.logins.WithLabelValues(flow, "ok").Inc()
	key := "openid"
	if unionid {
		key = "unionid"
	}
	m.loginKeys.WithLabelValues(flow, key).Inc()
}

// WeChatCall is the wechat.Config.OnCall hook.
func (m *Metrics) WeChatCall(endpoint, result string, d time.Duration) {
	m.wechatCalls.WithLabelValues(endpoint, result).Inc()
	m.wechatDuration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// StartRefused counts a login start refused with 429 (reason: client,
// network or total).
func (m *Metrics) StartRefused(reason string) { m.startsRefused.WithLabelValues(reason).Inc() }

// LoginCapped is the session.Manager and session.Issuer OnCapped hook: a
// login (kind session or token_family) ended by max_logins_per_user.
func (m *Metrics) LoginCapped(kind string) { m.loginsCapped.WithLabelValues(kind).Inc() }

// WebSocketOpened and WebSocketClosed follow the WebSockets tunnelled to
// upstream.
func (m *Metrics) WebSocketOpened(upstream string) { m.websockets.WithLabelValues(upstream).Inc() }
func (m *Metrics) WebSocketClosed(upstream string) { m.websockets.WithLabelValues(upstream).Dec() }

// StoreError counts a failed store operation.
func (m *Metrics) StoreError(op string) { m.storeErrors.WithLabelValues(op).Inc() }

// Refresh counts a WeChat token refresh (kind "sns" or "app").
func (m *Metrics) Refresh(kind, result string) { m.refreshes.WithLabelValues(kind, result).Inc() }

// AppToken records the current app access token's fetch and expiry times.
func (m *Metrics) AppToken(appID string, fetched, expires time.Time) {
	m.appTokenAge.WithLabelValues(appID).Set(float64(fetched.Unix()))
	m.appTokenExpiry.WithLabelValues(appID).Set(float64(expires.Unix()))
}

// AppTokenBlocked sets whether fetching appID's token is blocked by errcode.
func (m *Metrics) AppTokenBlocked(appID, errcode string, blocked bool) {
	v := 0.0
	if blocked {
		v = 1
	}
	m.appTokenProblem.WithLabelValues(appID, errcode).Set(v)
}

// ConfigLoaded records the config read at the start, at when.
func (m *Metrics) ConfigLoaded(when time.Time) {
	m.configLastSuccess.Set(1)
	m.configLastReload.Set(float64(when.Unix()))
}

// ConfigReload records a reload of the config at when: ok, or refused.
func (m *Metrics) ConfigReload(ok bool, when time.Time) {
	result, v := "error", 0.0
	if ok {
		result, v = "ok", 1
	}
	m.configReloads.WithLabelValues(result).Inc()
	m.configLastSuccess.Set(v)
	m.configLastReload.Set(float64(when.Unix()))
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
