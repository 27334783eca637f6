// Package policies holds the route rules of gateway.toml and decides, for a
// request (method, host, path, client address) and the caller's identity,
// whether wxgate forwards it, asks for a login, or refuses it.
//
// Upstreams read paths differently: Tomcat and Spring drop ";params" from
// segments, IIS and Spring ignore case, IIS drops trailing dots and spaces,
// some split on an encoded slash. A path is decided on every such reading
// and the strictest decision wins (ParsePath, Engine.Decide); what is
// forwarded keeps encoded delimiters encoded, so it means to the upstream
// what the policy decided on. Engine.Route matches the readings without
// the caller, so that a gateway looks the caller up only when a login
// route needs one.
//
// It is pure Go: no HTTP types, no I/O.
package policies

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Actions a rule can take.
const (
	Public = "public" // forward; the caller is never looked at
	Login  = "login"  // forward only with an identity that satisfies the rule
	Deny   = "deny"   // refuse with 403
)

// Scopes a login rule can ask for. Userinfo includes Base.
const (
	Base     = "base"
	Userinfo = "userinfo"
)

// Rule is one [[route]] of gateway.toml.
type Rule struct {
	// Name identifies the route in logs and metrics. Required.
	Name string `toml:"name"`
	// Host, if set, must equal the request host (case-insensitive, port
	// ignored), or with a leading dot (".example.com") be a subdomain of it.
	Host string `toml:"host"`
	// Path is a glob on the decoded path (every reading of it: see
	// ParsePath): "*" matches within a segment, "**" across segments, "?"
	// one character. "/a/**" also matches "/a". Empty with PathRegex empty
	// matches every path.
	Path string `toml:"path"`
	// PathRegex is a regular expression on the decoded path (every reading
	// of it), anchored at both ends. At most one of Path and PathRegex.
	PathRegex string `toml:"path_regex"`
	// Methods, if set, lists the HTTP methods the rule matches. A rule that
	// lists GET also matches HEAD.
	Methods []string `toml:"methods"`
	// Networks, if set, lists CIDRs the client address must be in.
	Networks []string `toml:"networks"`
	// Action is public, login or deny. Default: login.
	Action string `toml:"action"`
	// Scope is base or userinfo, for login rules. Default: the [policy] scope.
	Scope string `toml:"scope"`
	// AllowOpenIDs and AllowUnionIDs, if either is set, admit only those
	// identities (a match in either list admits).
	AllowOpenIDs  []string `toml:"allow_openids"`
	AllowUnionIDs []string `toml:"allow_unionids"`
	// API makes refusals 401/403 JSON instead of redirects and pages.
	API bool `toml:"api"`
	// Upstream names the [[upstream]] to forward to. Default: the [policy]
	// upstream.
	Upstream string `toml:"upstream"`
	// PassPhone forwards X-WeChat-Phone.
	PassPhone bool `toml:"pass_phone"`
	// PassWeChatToken forwards the user's WeChat access token as
	// X-WeChat-Access-Token. Off by default: upstreams rarely need it.
	PassWeChatToken bool `toml:"pass_wechat_token"`
	// PassAuthorization forwards a bearer Authorization header.
	PassAuthorization bool `toml:"pass_authorization"`

	host    string
	hostSub bool
	path    *regexp.Regexp
	// pathFold is path compiled case-insensitively, for the case-folded
	// readings; nil when path is.
	pathFold *regexp.Regexp
	// patternFold reports whether Path or PathRegex has upper-case or
	// non-ASCII characters, so that case-insensitive matching may differ
	// even on a lower-case path.
	patternFold bool
	methods     []string
	networks    []netip.Prefix
}

// Config is the [policy] section: what happens when no rule matches.
type Config struct {
	// Default is the action of requests no rule matches. Default: login.
	Default string `toml:"default"`
	// Scope is the scope of login rules that name none. Default: base.
	Scope string `toml:"scope"`
	// Upstream is the upstream of rules that name none. Default: the first
	// [[upstream]].
	Upstream string `toml:"upstream"`
	// API makes the default route answer JSON.
	API bool `toml:"api"`
	// Probes are paths browsers, crawlers and link previews fetch by
	// themselves (exact, as forwarded). Asked on a login route without a
	// login they start none: ProbeAnswer answers instead. nil: the
	// defaults, /favicon.ico and /robots.txt; empty: none.
	Probes []string `toml:"probes"`
	// ProbeAnswer is "404" (default), "401", or "upstream": the request
	// goes to the route's upstream without identity.
	ProbeAnswer string `toml:"probe_answer"`
}

// DefaultProbes are Config.Probes when it is nil.
var DefaultProbes = []string{"/favicon.ico", "/robots.txt"}

// Probe answers.
const (
	ProbeNotFound     = "404"
	ProbeUnauthorized = "401"
	ProbeUpstream     = "upstream"
)

// Identity is what a decision needs to know of the caller.
type Identity struct {
	OpenID  string
	UnionID string
	// Scope is the scope the identity has: base or userinfo.
	Scope string
}

// Outcome is the kind of a Decision.
type Outcome int

// Outcomes.
const (
	Allow     Outcome = iota // forward
	NeedLogin                // no identity: log in
	NeedScope                // identity with too small a scope: authorize userinfo
	Forbidden                // deny rule, or identity not in the allow lists
)

func (o Outcome) String() string {
	return [...]string{"allow", "need_login", "need_scope", "forbidden"}[o]
}

// Decision is the engine's answer for one request.
type Decision struct {
	Outcome Outcome
	Rule    *Rule // the rule that decided; never nil
	// Reading names the reading of the path that decided: PrimaryReading,
	// or one such as "params-removed" or "case-folded" when another
	// reading gave a stricter outcome.
	Reading string
	// Path is that reading of the path, decoded; for logs and explanations.
	Path string
}

// Engine decides requests against an ordered rule list. It is immutable
// after New and safe for concurrent use.
type Engine struct {
	rules []*Rule
	def   *Rule
	// foldRules reports whether some rule's pattern has upper-case or
	// non-ASCII characters: then the case-folded readings are matched even
	// for a lower-case ASCII path.
	foldRules   bool
	probes      []string
	probeAnswer string
}

// Probe reports how a request for path (as forwarded) that would need a
// login is answered when it is a probe (Config.Probes): a ProbeAnswer.
func (e *Engine) Probe(path string) (answer string, ok bool) {
	if slices.Contains(e.probes, path) {
		return e.probeAnswer, true
	}
	return "", false
}

// checkProbe refuses a probe that no request could match: Probe compares
// a path as it is forwarded, so a pattern, a query or a spelling the
// gateway rewrites ("/a/../b", "/%7Ex") would silently start logins after
// all.
func checkProbe(p string) error {
	if strings.ContainsAny(p, "*?#") {
		return errors.New("is not an exact path (probes are no patterns and have no query)")
	}
	fp, err := ParsePath(p)
	if err != nil || fp.Forward != p {
		return errors.New("is not a path as the gateway forwards it (no dot segments, doubled slashes or needless escapes), so it would never match")
	}
	return nil
}

// New validates and compiles rules and the default. The error lists every
// problem, one per line, naming the route.
func New(rules []Rule, cfg Config) (*Engine, error) {
	if cfg.Default == "" {
		cfg.Default = Login
	}
	if cfg.Scope == "" {
		cfg.Scope = Base
	}
	var errs []error
	if cfg.Default != Public && cfg.Default != Login && cfg.Default != Deny {
		errs = append(errs, fmt.Errorf("policy.default: %q is not public, login or deny", cfg.Default))
	}
	if cfg.Scope != Base && cfg.Scope != Userinfo {
		errs = append(errs, fmt.Errorf("policy.scope: %q is not base or userinfo", cfg.Scope))
	}
	if cfg.Probes == nil {
		cfg.Probes = DefaultProbes
	}
	if cfg.ProbeAnswer == "" {
		cfg.ProbeAnswer = ProbeNotFound
	}
	if cfg.ProbeAnswer != ProbeNotFound && cfg.ProbeAnswer != ProbeUnauthorized && cfg.ProbeAnswer != ProbeUpstream {
		errs = append(errs, fmt.Errorf("policy.probe_answer: %q is not 404, 401 or upstream", cfg.ProbeAnswer))
	}
	for i, p := range cfg.Probes {
		if err := checkProbe(p); err != nil {
			errs = append(errs, fmt.Errorf("policy.probes[%d]: %q %w", i, p, err))
		}
	}
	e := &Engine{def: &Rule{Name: "default", Action: cfg.Default, Scope: cfg.Scope, Upstream: cfg.Upstream, API: cfg.API},
		probes: slices.Clone(cfg.Probes), probeAnswer: cfg.ProbeAnswer}
	seen := map[string]bool{}
	for i := range rules {
		r := rules[i]
		where := fmt.Sprintf("route[%d]", i)
		if r.Name != "" {
			name := r.Name
			// Quoted if a terminal would not print it as written: a line
			// break in it could pass for another line of wxgate check's
			// report.
			if q := strconv.Quote(name); q[1:len(q)-1] != name {
				name = q
			}
			where = fmt.Sprintf("route[%d] (%s)", i, name)
		}
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", where))
		} else if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s.name: duplicate route name", where))
		}
		seen[r.Name] = true
		if r.Upstream == "" {
			r.Upstream = cfg.Upstream
		}
		if err := r.compile(cfg); err != nil {
			errs = append(errs, prefixErrs(where, err)...)
		}
		e.rules = append(e.rules, &r)
		e.foldRules = e.foldRules || r.patternFold
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

func prefixErrs(where string, err error) []error {
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, fmt.Errorf("%s.%s", where, line))
	}
	return out
}

func (r *Rule) compile(cfg Config) error {
	var errs []error
	if r.Action == "" {
		r.Action = Login
	}
	switch r.Action {
	case Public, Login, Deny:
	default:
		errs = append(errs, fmt.Errorf("action: %q is not public, login or deny", r.Action))
	}
	if r.Scope == "" {
		r.Scope = cfg.Scope
	} else if r.Action != Login {
		errs = append(errs, fmt.Errorf("scope: only login routes have a scope"))
	}
	if r.Scope != Base && r.Scope != Userinfo {
		errs = append(errs, fmt.Errorf("scope: %q is not base or userinfo", r.Scope))
	}
	if (len(r.AllowOpenIDs) > 0 || len(r.AllowUnionIDs) > 0) && r.Action != Login {
		errs = append(errs, fmt.Errorf("allow_openids: allow lists need action = \"login\""))
	}
	r.host = strings.ToLower(r.Host)
	r.hostSub = strings.HasPrefix(r.host, ".")
	switch {
	case r.Path != "" && r.PathRegex != "":
		errs = append(errs, fmt.Errorf("path_regex: set path or path_regex, not both"))
	case r.Path != "":
		if !strings.HasPrefix(r.Path, "/") {
			errs = append(errs, fmt.Errorf("path: %q must start with /", r.Path))
		} else {
			re := globPattern(r.Path)
			r.path, r.pathFold = regexp.MustCompile(re), regexp.MustCompile("(?i)"+re)
			r.patternFold = needsFold(r.Path)
		}
	case r.PathRegex != "":
		re, err := regexp.Compile("^(?:" + r.PathRegex + ")$")
		if err != nil {
			errs = append(errs, fmt.Errorf("path_regex: %w", err))
			break
		}
		r.path, r.pathFold = re, regexp.MustCompile("(?i)"+re.String())
		r.patternFold = needsFold(r.PathRegex)
	}
	for _, m := range r.Methods {
		r.methods = append(r.methods, strings.ToUpper(m))
	}
	for _, n := range r.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			if a, aerr := netip.ParseAddr(n); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("networks: %q is not a CIDR", n))
			continue
		}
		r.networks = append(r.networks, p.Masked())
	}
	return errors.Join(errs...)
}

// globPattern turns a path glob into an anchored regular expression. A
// trailing "/**" also matches the directory itself, so "/admin/**" protects
// "/admin".
func globPattern(glob string) string {
	var b strings.Builder
	b.WriteString("^")
	g := glob
	suffixAll := strings.HasSuffix(g, "/**")
	if suffixAll {
		g = strings.TrimSuffix(g, "/**")
	}
	for i := 0; i < len(g); i++ {
		switch c := g[i]; {
		case c == '*' && i+1 < len(g) && g[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	if suffixAll {
		b.WriteString("(?:/.*)?")
	}
	b.WriteString("$")
	return b.String()
}

// Match returns the first rule matching the request, or the default rule,
// for one reading of the path, decoded (such as Path.Clean), matched
// case-sensitively. host may carry a port and a trailing dot. Decide, which
// judges every reading, is what requests go through.
func (e *Engine) Match(method, host, path string, client netip.Addr) *Rule {
	return e.match(method, normalizeHost(host), path, client, false)
}

// match is Match with host normalized; fold matches path case-insensitively.
func (e *Engine) match(method, host, path string, client netip.Addr, fold bool) *Rule {
	for _, r := range e.rules {
		if r.matches(method, host, path, client, fold) {
			return r
		}
	}
	return e.def
}

// normalizeHost lower-cases host and drops its port and one trailing dot:
// "App.example.com.:443" is the host rule "app.example.com".
func normalizeHost(host string) string {
	return strings.TrimSuffix(stripPort(strings.ToLower(host)), ".")
}

// Rules returns the compiled rules in order, then the default rule.
func (e *Engine) Rules() []*Rule { return append(slices.Clone(e.rules), e.def) }

// Judge decides what the rule does with id (nil: no identity).
func (r *Rule) Judge(id *Identity) Outcome {
	switch r.Action {
	case Public:
		return Allow
	case Deny:
		return Forbidden
	}
	if id == nil {
		return NeedLogin
	}
	if len(r.AllowOpenIDs) > 0 || len(r.AllowUnionIDs) > 0 {
		ok := id.OpenID != "" && slices.Contains(r.AllowOpenIDs, id.OpenID) ||
			id.UnionID != "" && slices.Contains(r.AllowUnionIDs, id.UnionID)
		if !ok {
			return Forbidden
		}
	}
	if r.Scope == Userinfo && id.Scope != Userinfo {
		return NeedScope
	}
	return Allow
}

// Explain says in one line why the rule matched, for `wxgate check --explain`.
func (r *Rule) Explain() string {
	if r.Name == "default" && r.path == nil && r.host == "" {
		return "no route matched; [policy] default applies: action=" + r.Action + " scope=" + r.Scope
	}
	var parts []string
	if r.Host != "" {
		parts = append(parts, "host "+r.Host)
	}
	if r.Path != "" {
		parts = append(parts, "path "+r.Path)
	}
	if r.PathRegex != "" {
		parts = append(parts, "path_regex "+r.PathRegex)
	}
	if len(r.Methods) > 0 {
		parts = append(parts, "methods "+strings.Join(r.Methods, ","))
	}
	if len(r.Networks) > 0 {
		parts = append(parts, "networks "+strings.Join(r.Networks, ","))
	}
	if len(parts) == 0 {
		parts = append(parts, "matches everything")
	}
	s := fmt.Sprintf("route %q (%s): action=%s", r.Name, strings.Join(parts, ", "), r.Action)
	if r.Action == Login {
		s += " scope=" + r.Scope
	}
	if r.API {
		s += " api"
	}
	return s + " upstream=" + r.Upstream
}

func (r *Rule) matches(method, host, path string, client netip.Addr, fold bool) bool {
	if r.host != "" {
		if r.hostSub {
			if !strings.HasSuffix(host, r.host) || len(host) == len(r.host) {
				return false
			}
		} else if host != r.host {
			return false
		}
	}
	// HEAD is judged by GET's rules: upstreams (Go's ServeMux, Spring,
	// Express, Rails) answer it with their GET handler.
	if len(r.methods) > 0 && !slices.Contains(r.methods, method) && !(method == "HEAD" && slices.Contains(r.methods, "GET")) {
		return false
	}
	if r.path != nil {
		re := r.path
		if fold {
			re = r.pathFold
		}
		if !re.MatchString(path) {
			return false
		}
	}
	if len(r.networks) > 0 {
		ok := false
		for _, n := range r.networks {
			if client.IsValid() && n.Contains(client.Unmap()) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.Index(host, "]"); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.Count(host, ":") == 1 {
		return host[:i]
	}
	return host
}
