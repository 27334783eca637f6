package proxy

import (
	"fmt"
	"net"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// configKeys lists every key a config file may set, dotted as the decoder
// names undecoded keys ("server.listen", "route.path"), tables included
// ("server", "wechat.website"), in the order of the Config struct: what a
// misspelt key is compared to.
func configKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := strings.Split(sf.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" || !sf.IsExported() {
				continue
			}
			key := prefix + tag
			keys = append(keys, key)
			ft := sf.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft, key+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return keys
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
		shown := key
		if all := indexed[key]; seen[key] < len(all) {
			shown = withRouteName(all[seen[key]], cfg)
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
	return best
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
