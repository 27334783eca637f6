package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/wxgate/wxgate/policies"
	"github.com/wxgate/wxgate/session"
)

// live is the part of a gateway a reload replaces, all at once: the routes
// and [policy] compiled, the upstreams with their connection pools, and
// [server] allowed_redirect_hosts. A request loads it once and decides,
// names its upstream and forwards with that one, so that a reload in the
// middle of a request never pairs a new route with an old upstream.
type live struct {
	engine        *policies.Engine
	upstreams     map[string]*upstream
	redirectHosts []string
}

// errNoConfigFile is Reload's answer for a gateway whose config was not
// read from a file (LoadConfig).
var errNoConfigFile = errors.New("proxy: the config was not read from a file; nothing to reload")

// newLive wires cfg's reloadable part. An upstream whose [[upstream]] keys
// are those of one in old keeps old's (and its pool of connections);
// retired are old's upstreams that are not carried over.
func (s *Server) newLive(cfg *Config, old *live) (l *live, retired []*upstream) {
	l = &live{engine: cfg.engine, upstreams: map[string]*upstream{}, redirectHosts: cfg.Server.AllowedRedirectHosts}
	for _, u := range cfg.Upstreams {
		if old != nil {
			if prev := old.upstreams[u.Name]; prev != nil && prev.conf == u {
				l.upstreams[u.Name] = prev
				continue
			}
		}
		l.upstreams[u.Name] = newUpstream(u, s.log, s.metrics)
	}
	if old != nil {
		for name, u := range old.upstreams {
			if l.upstreams[name] != u {
				retired = append(retired, u)
			}
		}
	}
	return l, retired
}

// Reload reads the config file again, as the start did: the same file,
// the environment's overrides, Options.Adjust, then Provision and
// Validate. If the file has no problem and changes only routes, [policy],
// upstreams and allowed_redirect_hosts, the new ones serve every request
// that starts from then on; requests in flight finish with the old ones,
// and no connection, session or app token is touched. Otherwise nothing
// changes: each problem is logged on a line of its own, with the file's
// line where the key is set when it can be found, and returned. Either
// way it is counted in wxgate_config_reloads_total. SIGHUP and [server]
// watch_config call it; concurrent calls run one after the other.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, src, err := s.readAgain()
	s.metrics.ConfigReload(err == nil, time.Now())
	if src != nil {
		sum := sha256.Sum256(src)
		s.readSum.Store(&sum)
	}
	if err != nil {
		problems := place(s.cfg.path, src, err)
		for _, p := range problems {
			attrs := []slog.Attr{slog.String("file", s.cfg.path), slog.String("problem", p.text)}
			if p.line > 0 {
				attrs = append(attrs, slog.Int("line", p.line))
			}
			s.log.LogAttrs(context.Background(), slog.LevelError, "config reload refused: "+p.String(s.cfg.path), attrs...)
		}
		s.log.LogAttrs(context.Background(), slog.LevelError, "config reload refused; the running config stays",
			slog.String("file", s.cfg.path), slog.Int("problems", len(problems)))
		lines := make([]error, len(problems))
		for i, p := range problems {
			lines[i] = errors.New(p.String(s.cfg.path))
		}
		return errors.Join(lines...)
	}
	l, retired := s.newLive(cfg, s.live.Load())
	s.live.Store(l)
	for _, u := range retired {
		u.retire()
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "config reloaded",
		slog.String("file", s.cfg.path), slog.Int("routes", len(cfg.Routes)), slog.Int("upstreams", len(cfg.Upstreams)))
	return nil
}

// readAgain loads, adjusts, provisions and validates the config file
// again and checks that it changes only what a reload may. src is the
// file's content as read (nil if it could not be).
func (s *Server) readAgain() (cfg *Config, src []byte, err error) {
	if s.cfg.path == "" {
		return nil, nil, errNoConfigFile
	}
	cfg, src, warnings, err := loadConfig(s.cfg.path, os.Environ())
	if err != nil {
		return nil, src, err
	}
	if s.adjust != nil {
		s.adjust(cfg)
	}
	for _, w := range warnings {
		s.log.Warn("config reload: " + w)
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		return nil, src, err
	}
	if err := errors.Join(restartOnly(s.cfg, cfg), s.keyFileChanged(cfg)); err != nil {
		return nil, src, err
	}
	return cfg, src, nil
}

// keyFileChanged reports a signing key file whose keys are no longer the
// ones the gateway started with: a key appended or moved first for a
// rotation, or a file gone. The keys are read only at the start, so a
// reload that went on would report success with the old keys still
// signing and published.
func (s *Server) keyFileChanged(cur *Config) error {
	if s.keyIDs == nil || cur.Tokens.SigningKeyFile != s.cfg.Tokens.SigningKeyFile {
		// Keys from Options, or a path restartOnly already names.
		return nil
	}
	b, err := os.ReadFile(cur.Tokens.SigningKeyFile)
	if err != nil {
		return fmt.Errorf("tokens.signing_key_file: %w; the running keys stay until a restart", err)
	}
	ids, err := session.KeyIDs(b)
	if err != nil {
		return fmt.Errorf("tokens.signing_key_file: %w; the running keys stay until a restart", err)
	}
	if !slices.Equal(ids, s.keyIDs) {
		return fmt.Errorf("tokens.signing_key_file: its keys changed (kids %s, running %s); that takes a restart",
			strings.Join(ids, ", "), strings.Join(s.keyIDs, ", "))
	}
	return nil
}

// restartOnly names every key whose value differs between the running
// config and cur, other than the reloadable ones: each needs a restart. A
// section whose keys are equal but whose secret or file (an AppSecret, a
// password, the encryption key, the verify file) reads differently is
// named too: a reload does not apply it either. Values are never shown;
// some are secrets.
func restartOnly(running, cur *Config) error {
	var errs []error
	a, b := reloadFree(running), reloadFree(cur)
	diffKeys(reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem(), "", func(key, what string) {
		errs = append(errs, fmt.Errorf("%s: %s; that takes a restart (reload changes only [[route]], [policy], [[upstream]] and server.allowed_redirect_hosts)", key, what))
	})
	if string(running.verify.body) != string(cur.verify.body) {
		errs = append(errs, fmt.Errorf("wechat.official_account.verify_file: its content changed; that takes a restart"))
	}
	return errors.Join(errs...)
}

// reloadFree is a copy of c's sections without what a reload may change
// and without what Provision made outside them.
func reloadFree(c *Config) Config {
	return Config{
		Server: func(s ServerConfig) ServerConfig { s.AllowedRedirectHosts = nil; return s }(c.Server),
		// The logger and how it shows users are made once, by New.
		Log:     c.Log,
		Session: c.Session,
		Tokens:  c.Tokens,
		WeChat:  c.WeChat,
	}
}

// diffKeys calls report for every key of gateway.toml whose value differs
// between a and b (structs of one type), and for every section whose keys
// are equal but whose provisioned values (secrets read, files read)
// differ.
func diffKeys(a, b reflect.Value, path string, report func(key, what string)) bool {
	found := false
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := strings.Split(sf.Tag.Get("toml"), ",")[0]
		if !sf.IsExported() || tag == "" || tag == "-" {
			continue
		}
		key := tag
		if path != "" {
			key = path + "." + tag
		}
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct {
			if diffKeys(fa, fb, key, report) {
				found = true
			} else if !sameProvisioned(fa, fb) {
				report(key, "a secret or file it names reads differently now")
				found = true
			}
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			report(key, "changed")
			found = true
		}
	}
	return found
}

// sameProvisioned reports whether two sections whose keys are equal also
// hold equal values apart from the keys: what Provision read and parsed.
// Fields set in code (toml:"-": hooks, clients) are left out.
func sameProvisioned(a, b reflect.Value) bool {
	ca, cb := reflect.New(a.Type()).Elem(), reflect.New(b.Type()).Elem()
	ca.Set(a)
	cb.Set(b)
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.IsExported() && strings.Split(sf.Tag.Get("toml"), ",")[0] == "-" {
			ca.Field(i).SetZero()
			cb.Field(i).SetZero()
		}
	}
	return reflect.DeepEqual(ca.Interface(), cb.Interface())
}
