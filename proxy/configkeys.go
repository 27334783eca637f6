package proxy

import (
	"fmt"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// configKeys lists every key a config file may set, dotted as the decoder
// names undecoded keys ("server.listen", "route.path"), tables included
// ("server", "wechat.website"), in the order of the Config struct: what a
// misspelt key is compared to.
func configKeys() []string {
	var keys []string
	walkConfigKeys(func(key string, _ reflect.Type) { keys = append(keys, key) })
	return keys
}

// walkConfigKeys calls visit with every key of Config, in struct order
// (a table before its keys), and the type of its value: the element of a
// slice or pointer.
func walkConfigKeys(visit func(key string, t reflect.Type)) {
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := strings.Split(sf.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" || !sf.IsExported() {
				continue
			}
			key, ft := prefix+tag, sf.Type
			if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			visit(key, ft)
			if ft.Kind() == reflect.Struct {
				walk(ft, key+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

// unknownKeys is the decoder's undecoded keys as problems, each with the
// nearest known key when one is near enough. A key under an unknown table
// is left out: the table's own problem covers it.
//
// The decoder names a key of a [[route]] or [[upstream]] without its
// index ("route.acton"), once per occurrence in file order; src, the
// file, gives the index (the n-th "route.acton" is the n-th [[route]] to
// set acton) and cfg, as decoded, the name: "route[2] (orders).acton".
func unknownKeys(md toml.MetaData, src []byte, cfg *Config) []string {
	known := configKeys()
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	indexed := indexedKeys(src)
	seen := map[string]int{}
	var out []string
	for _, k := range md.Undecoded() {
		key := k.String()
		if i := strings.LastIndexByte(key, '.'); i > 0 && undecoded[key[:i]] {
			continue
		}
		shown := asciiKey(key)
		if all := indexed[dottedKey(key)]; seen[key] < len(all) {
			shown = withRouteName(asciiKey(all[seen[key]]), cfg)
		}
		seen[key]++
		text := "unknown key " + shown
		if s := nearestKey(key, known); s != "" {
			text += " (did you mean " + s + "?)"
		}
		out = append(out, text)
	}
	return out
}

// asciiKey is key with every rune beyond printable ASCII escaped
// ("server.\"l\u0456sten\""): a Cyrillic і or a zero-width space would
// otherwise show a misspelt key as the very key it suggests.
func asciiKey(key string) string {
	for _, r := range key {
		if r < ' ' || r > '~' {
			q := strconv.QuoteToASCII(key)
			return strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
		}
	}
	return key
}

// indexedKeys maps each key the file sets inside an array of tables,
// without its indexes ("route.acton"), to the keys with them
// ("route[0].acton", "route[2].acton"), in file order.
func indexedKeys(src []byte) map[string][]string {
	type at struct {
		key  string
		line int
	}
	byBare := map[string][]at{}
	for k, n := range scanKeyLines(src).exact {
		if strings.Contains(k, "[") {
			b := arrayIndex.ReplaceAllString(k, "")
			byBare[b] = append(byBare[b], at{k, n})
		}
	}
	out := map[string][]string{}
	for b, all := range byBare {
		sort.Slice(all, func(i, j int) bool { return all[i].line < all[j].line })
		for _, a := range all {
			out[b] = append(out[b], a.key)
		}
	}
	return out
}

// withRouteName adds the name of the route or upstream an indexed key is
// in, as Provision's problems do: "route[2] (orders).acton".
func withRouteName(key string, cfg *Config) string {
	var i int
	name, ok := "", false
	if _, err := fmt.Sscanf(key, "route[%d]", &i); err == nil && i < len(cfg.Routes) {
		name, ok = cfg.Routes[i].Name, true
	} else if _, err := fmt.Sscanf(key, "upstream[%d]", &i); err == nil && i < len(cfg.Upstreams) {
		name, ok = cfg.Upstreams[i].Name, true
	}
	if !ok {
		return key
	}
	head, rest, _ := strings.Cut(key, "]")
	return withName(head+"]", name) + rest
}

// nearestKey is the known key closest to key, as a suggestion: within the
// same table, its last part ("idle_ttl"); else the whole key of another
// table ("session.idle_ttl" for "server.idle_ttl"). "" when none is within
// a third of the name's length (at least one edit).
func nearestKey(key string, known []string) string {
	parent, leaf := splitKey(key)
	best, bestD := "", maxEdits(leaf)+1
	for _, k := range known {
		kp, kl := splitKey(k)
		if kp == parent {
			if d := editDistance(leaf, kl); d < bestD {
				best, bestD = kl, d
			}
		}
	}
	if best != "" {
		return best
	}
	bestD = maxEdits(key) + 1
	for _, k := range known {
		_, kl := splitKey(k)
		d := editDistance(key, k)
		if ld := editDistance(leaf, kl); ld <= maxEdits(leaf) && ld < d {
			d = ld
		}
		if d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		best = endsWith(key, known, ".")
	}
	return best
}

// endsWith is the one name of known that ends with name, once both are
// read with sep as "_": "server.log_level" for "log.level" ([log] has no
// level), WXGATE_SERVER_LOG_LEVEL for WXGATE_LOG_LEVEL; "" for none or
// several.
func endsWith(name string, known []string, sep string) string {
	tail := "_" + strings.ReplaceAll(name, sep, "_")
	found := ""
	for _, k := range known {
		if strings.HasSuffix(strings.ReplaceAll(k, sep, "_"), tail) {
			if found != "" {
				return ""
			}
			found = k
		}
	}
	return found
}

func splitKey(k string) (parent, leaf string) {
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		return k[:i], k[i+1:]
	}
	return "", k
}

func maxEdits(s string) int { return max(1, len(s)/3) }

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of two neighbours
// ("idel" for "idle") each count one. Keys are ASCII.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// isListenAddr says whether net.Listen("tcp", addr) can take addr's form:
// host:port with an empty host allowed and a port number or service name.
func isListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// durationKeys lists the dotted keys whose value is a duration
// ("wechat.timeout", "upstream.timeout"), as configKeys names them.
func durationKeys() map[string]bool {
	out := map[string]bool{}
	walkConfigKeys(func(key string, t reflect.Type) {
		if t == durationType {
			out[key] = true
		}
	})
	return out
}

// unitlessDurations names every duration src writes as a bare number
// other than 0: the decoder takes it as nanoseconds, so "timeout = 5"
// would be 5ns and every call would time out, while the same 5 from a
// WXGATE_* variable is refused for its missing unit.
func unitlessDurations(src []byte, cfg *Config) []string {
	var raw map[string]any
	if _, err := toml.Decode(string(src), &raw); err != nil {
		return nil
	}
	durations := durationKeys()
	var out []string
	var walk func(m map[string]any, key, shown string)
	walk = func(m map[string]any, key, shown string) {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			switch v := m[n].(type) {
			case map[string]any:
				walk(v, key+n+".", shown+n+".")
			case []map[string]any:
				for i, t := range v {
					walk(t, key+n+".", fmt.Sprintf("%s%s[%d].", shown, n, i))
				}
			case int64:
				if durations[key+n] && v != 0 {
					out = append(out, fmt.Sprintf("%s: %d has no unit, which makes it %dns; write it with one (\"%ds\", \"%dm\")",
						withRouteName(shown+n, cfg), v, v, v, v))
				}
			}
		}
	}
	walk(raw, "", "")
	return out
}
