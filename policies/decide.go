package policies

import (
	"net/netip"
	"strings"
)

// Route is what the rules say of a request before anyone looks at the
// caller: the rule each reading of its path matches, in the order Decide
// judges them. Engine.Route builds it; Route.Decide judges it for a caller.
// A gateway decides with no identity first and looks the caller up only
// when that outcome is NeedLogin: public and deny routes never need the
// session store (issue 10). It holds no pointer into the request and costs
// no allocation.
type Route struct {
	matches [2 * numKinds]match
	n       uint8
}

// match is one reading of a path and the rule it matched.
type match struct {
	rule *Rule
	path string // the reading, decoded (case-folded readings as matched)
	kind uint8  // index into readingNames
}

// Route matches every reading of p against the rules: each as is and,
// when that can differ, case-folded (rules see "/SECRET" as "/secret", as
// IIS and Spring do). host may carry a port and a trailing dot; client is
// what networks match (the zero Addr matches none).
func (e *Engine) Route(method, host string, p Path, client netip.Addr) Route {
	host = normalizeHost(host)
	if p.n == 0 {
		p = rootPath
	}
	var rt Route
	passes := 1
	if p.fold || e.foldRules {
		passes = 2
	}
	for pass := range passes {
		fold := pass == 1
		for i, path := range p.readings[:p.n] {
			kind := p.kinds[i]
			if fold {
				path, kind = foldJava(path), numKinds+kind
			}
			r := e.match(method, host, path, client, fold)
			rt.matches[rt.n] = match{rule: r, path: path, kind: kind}
			rt.n++
			if r.Action == Deny {
				// Forbidden for every caller: no later reading can be
				// stricter, and Decide stops here.
				return rt
			}
		}
	}
	return rt
}

// Decide judges the route for id (nil: no identity) and returns the
// strictest outcome over the readings: Forbidden, then NeedLogin, then
// NeedScope, then Allow. Among readings with that outcome the primary one
// (Path.Clean, case-sensitive) decides if it is one of them, else the
// first in the order of readingNames.
//
// With a nil id the outcome is NeedLogin exactly when the caller can change
// it: some reading's rule is a login rule and none a deny rule. Allow holds
// for every caller, by the same rule; Forbidden too, though with an
// identity an allow list on an earlier reading may be the rule named.
func (rt *Route) Decide(id *Identity) Decision {
	var best Decision
	bestRank := -1
	for _, m := range rt.matches[:rt.n] {
		o := m.rule.Judge(id)
		if rank[o] <= bestRank {
			continue
		}
		best, bestRank = Decision{Outcome: o, Rule: m.rule, Reading: readingNames[m.kind], Path: m.path}, rank[o]
		if o == Forbidden {
			return best // nothing is stricter
		}
	}
	return best
}

// Decide is Route then Route.Decide: the decision for one caller. id is nil
// when the caller has no identity.
func (e *Engine) Decide(method, host string, p Path, client netip.Addr, id *Identity) Decision {
	rt := e.Route(method, host, p, client)
	return rt.Decide(id)
}

// rank orders outcomes by strictness. Outcome's values keep the order
// they always had, which is not this one.
var rank = [...]int{Allow: 0, NeedScope: 1, NeedLogin: 2, Forbidden: 3}

// javaFolds maps the letters Java's String.equalsIgnoreCase (Spring's
// AntPathMatcher with caseSensitive=false) equates with an ASCII letter
// but Go's (?i) does not: toUpperCase('ı') is 'I' and toLowerCase('İ') is
// 'i'. (ſ and the Kelvin sign K, which Java also folds to ASCII, Go's
// simple folding already matches.)
var javaFolds = strings.NewReplacer("\u0131", "i", "\u0130", "i")

// foldJava rewrites a reading for the case-folded pass.
func foldJava(path string) string {
	if !strings.ContainsAny(path, "\u0131\u0130") {
		return path
	}
	return javaFolds.Replace(path)
}
