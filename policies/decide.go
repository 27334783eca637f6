package policies

import (
	"net/netip"
	"strings"
)

// Decide judges the request on every reading of p and returns the strictest
// outcome: Forbidden, then NeedLogin, then NeedScope, then Allow. Among
// readings with that outcome the primary one (Path.Clean, case-sensitive)
// decides if it is one of them, else the first in the order of
// readingNames. id is nil when the caller has no identity.
//
// Each reading is matched as is and, when that can differ, case-folded:
// rules see "/SECRET" as "/secret", as IIS and Spring do.
func (e *Engine) Decide(method, host string, p Path, client netip.Addr, id *Identity) Decision {
	host = normalizeHost(host)
	if p.n == 0 {
		p = rootPath
	}
	var best Decision
	bestRank := -1
	passes := 1
	if p.fold || e.foldRules {
		passes = 2
	}
	for pass := range passes {
		fold := pass == 1
		for i, path := range p.readings[:p.n] {
			if fold {
				path = foldJava(path)
			}
			r := e.match(method, host, path, client, fold)
			o := r.Judge(id)
			if rank[o] <= bestRank {
				continue
			}
			name := readingNames[p.kinds[i]]
			if fold {
				name = readingNames[numKinds+p.kinds[i]]
			}
			best, bestRank = Decision{Outcome: o, Rule: r, Reading: name, Path: path}, rank[o]
			if o == Forbidden {
				return best // nothing is stricter
			}
		}
	}
	return best
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
