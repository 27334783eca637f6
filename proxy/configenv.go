package proxy

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// envElsewhere matches the WXGATE_* variables that are not key overrides
// yet are no mistake: the test suite's (WXGATE_TEST_*, WXGATE_REQUIRE_*,
// WXGATE_ARTIFACTS).
var envElsewhere = regexp.MustCompile(`^WXGATE_(TEST_.*|REQUIRE_.*|ARTIFACTS)$`)

// serviceLink matches the variables Kubernetes sets in every pod of a
// namespace for each Service with a cluster IP whose name starts with
// wxgate ("wxgate", and "wxgate-redis" or a nameSuffix's "wxgate-staging"
// as WXGATE_REDIS_*, WXGATE_STAGING_*): <NAME>_SERVICE_HOST,
// <NAME>_SERVICE_PORT[_<PORT NAME>], <NAME>_PORT and
// <NAME>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]. Refused, they would stop
// the gateway from starting in that namespace.
var (
	serviceLink     = regexp.MustCompile(`^WXGATE_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)$`)
	serviceLinkPort = regexp.MustCompile(`^WXGATE_(?:[A-Z0-9_]+_)?PORT$`)
)

// isServiceLink says whether name=value is one of serviceLink's. A bare
// <NAME>_PORT must hold the "tcp://10.0.0.1:8080" Kubernetes gives it:
// WXGATE_SERVER_PORT=80 is an operator's guess at a key, to be reported.
func isServiceLink(name, value string) bool {
	if serviceLink.MatchString(name) {
		return true
	}
	if !serviceLinkPort.MatchString(name) {
		return false
	}
	for _, scheme := range []string{"tcp://", "udp://", "sctp://"} {
		if strings.HasPrefix(value, scheme) {
			return true
		}
	}
	return false
}

// unknownEnv reports every WXGATE_* variable in vars that overrides no key
// (known holds those that do), is not named by one of the config's *_env
// keys (secret_env = "WXGATE_OA_SECRET") and is not one of envElsewhere
// or a Kubernetes service link;
// each with the nearest known name when one is near. A misspelt override
// would otherwise be ignored without a word.
func unknownEnv(cfg *Config, vars map[string]string, known map[string]bool) []error {
	named := map[string]bool{}
	walkKeys(reflect.ValueOf(cfg).Elem(), nil, func(path []string, f reflect.Value) {
		if strings.HasSuffix(path[len(path)-1], "_env") && f.Kind() == reflect.String {
			named[f.String()] = true
		}
	})
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names)
	var unknown []string
	for v := range vars {
		if !known[v] && !named[v] && !envElsewhere.MatchString(v) && !isServiceLink(v, vars[v]) {
			unknown = append(unknown, v)
		}
	}
	sort.Strings(unknown)
	var errs []error
	for _, v := range unknown {
		best, bestD := "", maxEdits(strings.TrimPrefix(v, EnvPrefix))+1
		for _, n := range names {
			if d := editDistance(v, n); d < bestD {
				best, bestD = n, d
			}
		}
		if best == "" {
			best = endsWith(strings.TrimPrefix(v, EnvPrefix), names, "_")
		}
		if best != "" {
			errs = append(errs, fmt.Errorf("%s: sets no key (did you mean %s?)", v, best))
		} else {
			errs = append(errs, fmt.Errorf("%s: sets no key (WXGATE_<SECTION>_<KEY>, as WXGATE_SERVER_LISTEN)", v))
		}
	}
	return errs
}
