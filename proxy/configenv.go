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
// WXGATE_ARTIFACTS), and those Kubernetes sets in every pod of a
// namespace with a Service named wxgate (WXGATE_SERVICE_HOST,
// WXGATE_PORT_8080_TCP_ADDR, ...), which would otherwise stop the gateway
// from starting.
var envElsewhere = regexp.MustCompile(`^WXGATE_(TEST_.*|REQUIRE_.*|ARTIFACTS|SERVICE_HOST|SERVICE_PORT(_.*)?|PORT(_\d+_(TCP|UDP|SCTP)(_.*)?)?)$`)

// unknownEnv reports every WXGATE_* variable in vars that overrides no key
// (known holds those that do), is not named by one of the config's *_env
// keys (secret_env = "WXGATE_OA_SECRET") and is not one of envElsewhere;
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
		if !known[v] && !named[v] && !envElsewhere.MatchString(v) {
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
		if best != "" {
			errs = append(errs, fmt.Errorf("%s: sets no key (did you mean %s?)", v, best))
		} else {
			errs = append(errs, fmt.Errorf("%s: sets no key (WXGATE_<SECTION>_<KEY>, as WXGATE_SERVER_LISTEN)", v))
		}
	}
	return errs
}
