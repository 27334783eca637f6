package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/wxgate/wxgate/internal/secret"
	"github.com/wxgate/wxgate/session"
)

// Problem is one line of a config's report: a problem, or a warning about
// something that works but should not be done, placed in the file.
type Problem struct {
	Path    string // the config file
	Line    int    // from 1; 0 when no line of the file sets the key
	Text    string // names the key first: "route[2] (orders).upstream: ..."
	Warning bool
}

// String is the problem as `wxgate check` prints it, the way a compiler
// does: "gateway.toml:12: route[2] (orders).upstream: no [[upstream]]
// named "ordres"", "gateway.toml:229: warning: ...".
func (p Problem) String() string {
	text := p.Text
	if p.Warning {
		text = "warning: " + text
	}
	return problemLine{line: p.Line, text: text}.String(p.Path)
}

// CheckOptions are Check's.
type CheckOptions struct {
	// Env is the environment, KEY=VALUE pairs, as os.Environ gives: its
	// WXGATE_* overrides and unknown names. The secrets themselves are read
	// from the process's environment, as Provision always does.
	Env []string
	// Adjust, if not nil, changes the config before Provision, as
	// Options.Adjust does.
	Adjust func(*Config)
	// UnsetSecretsWarn makes a secret whose environment variable is empty
	// or unset a warning, not a problem: to check a config on a machine
	// without the production secrets. A gateway never starts without them.
	UnsetSecretsWarn bool
}

// Check loads the config at path (LoadConfig), adjusts, provisions and
// validates it, and returns every problem and warning, each placed at the
// line of the file that sets its key (or the header of its table when the
// key is missing); a problem with a key a WXGATE_* variable set names the
// variable instead. The config is nil when a problem is not a warning:
// what Check accepts, New starts with (once the secrets are set).
func Check(path string, o CheckOptions) (*Config, []Problem) {
	cfg, src, warnings, err := loadConfigAll(path, o.Env)
	var out []Problem
	add := func(err error, warning bool) {
		for _, pl := range place(path, src, err) {
			p := Problem{Path: path, Line: pl.line, Text: pl.text, Warning: warning}
			if cfg != nil {
				if v, ok := cfg.fromEnv[problemKey(pl.text)]; ok {
					p.Line, p.Text = 0, p.Text+" (set by "+v+")"
				}
			}
			out = append(out, p)
		}
	}
	if cfg == nil {
		add(err, false)
		sortProblems(out)
		return nil, out
	}
	// Unknown keys and variables, and values that did not parse, come
	// first, but do not stop the rest from being checked.
	failed := err != nil
	if err != nil {
		add(err, false)
	}
	if o.Adjust != nil {
		o.Adjust(cfg)
	}
	for _, w := range warnings {
		add(errors.New(w), true)
	}
	// Both, so that one run names every problem.
	for _, e := range leaves(errors.Join(cfg.Provision(), cfg.Validate(), startFiles(cfg))) {
		var unset *secret.UnsetError
		warn := o.UnsetSecretsWarn && errors.As(e, &unset)
		failed = failed || !warn
		add(e, warn)
	}
	sortProblems(out)
	if failed {
		return nil, out
	}
	return cfg, out
}

// sortProblems puts problems in the order of their lines, as a reader goes
// through the file, and those no line places (a variable's) last.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		return cmp.Compare(la, lb)
	})
}

// leaves splits the errors errors.Join joined (at any depth) into the
// ones it joined; an error that joins nothing is its own leaf.
// A join's text is its errors' texts, one per line, which tells it from
// fmt.Errorf's several %w.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var texts []string
	var out []error
	for _, e := range j.Unwrap() {
		texts = append(texts, e.Error())
		out = append(out, leaves(e)...)
	}
	if strings.Join(texts, "\n") != err.Error() {
		// fmt.Errorf with several %w: one problem, not a join.
		return []error{err}
	}
	return out
}

// startFiles reports what New would refuse in the files it reads at the
// start, the signing keys and the memory store's snapshot, without
// creating, restoring or removing either: otherwise a config check passes
// and every replica then fails to start on the file.
func startFiles(cfg *Config) error {
	as := session.OriginServe
	if cfg.Server.Dev {
		as = session.OriginDev
	}
	var errs []error
	if f := cfg.Tokens.SigningKeyFile; f != "" {
		if err := session.CheckKeys(f, as); err != nil {
			errs = append(errs, fmt.Errorf("tokens.signing_key_file: %w", err))
		}
	}
	if f := cfg.Session.SnapshotFile; f != "" && cfg.Session.Store != "redis" {
		if err := session.CheckSnapshot(f, as); err != nil {
			errs = append(errs, fmt.Errorf("session.snapshot_file: %w", err))
		}
	}
	return errors.Join(errs...)
}
