package proxy

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// problemLine is one problem of a refused config, placed in its file when
// the key it names is found there.
type problemLine struct {
	line int    // from 1; 0 when the key is not set in the file
	text string // the problem, as Provision, Validate or the decoder said it
}

func (p problemLine) String(path string) string {
	if p.line > 0 {
		return path + ":" + strconv.Itoa(p.line) + ": " + p.text
	}
	return path + ": " + p.text
}

// place splits err (LoadConfig's, Provision's, Validate's or
// restartOnly's: one problem per line, each starting with the key it
// names) into its problems and finds each one's line in src, the file at
// path: a TOML syntax error's own position; else the line that sets the
// key, or the header of its table when the key is not set (a required
// key missing). Keys set only by an environment variable have no line.
func place(path string, src []byte, err error) []problemLine {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The key and the decoder's message; its own "toml: line N"
		// prefix would say the line twice.
		text := "toml: " + pe.Message
		if pe.LastKey != "" {
			text = scanKeyLines(src).indexed(pe.LastKey, pe.Position.Line) + ": " + pe.Message
		}
		return []problemLine{{line: pe.Position.Line, text: text}}
	}
	lines := scanKeyLines(src)
	var out []problemLine
	for _, text := range strings.Split(err.Error(), "\n") {
		text = strings.TrimPrefix(text, path+": ")
		if m := decodeError.FindStringSubmatch(text); m != nil {
			// A value of the wrong type ("timeout = 1.5"): placed by the
			// decoder, named by its key like every other problem.
			n, _ := strconv.Atoi(m[1])
			if key, err := strconv.Unquote(m[2]); err == nil {
				out = append(out, problemLine{line: n, text: lines.indexed(key, n) + ": " + m[3]})
				continue
			}
		}
		out = append(out, problemLine{line: lines.find(problemKey(text)), text: text})
	}
	return out
}

// decodeError is the decoder's error for a value it cannot store in its
// key's type: `toml: line 12 (last key "wechat.timeout"): incompatible
// types: ...`.
var decodeError = regexp.MustCompile(`^toml: line (\d+) \(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// routeName is the " (name)" Provision adds after a route's index.
var routeName = regexp.MustCompile(` \([^)]*\)`)

// problemKey is the key a problem's text starts with: "route[2].upstream"
// for "route[2] (hot).upstream: no [[upstream]] named ...", "server.foo"
// for "unknown key server.foo"; "" if it names none.
func problemKey(text string) string {
	if k, ok := strings.CutPrefix(text, "unknown key "); ok {
		// "route[2]" "(orders).acton" "(did you mean action?)"
		k, _, _ = strings.Cut(routeName.ReplaceAllString(k, ""), " ")
		return k
	}
	k, _, ok := strings.Cut(routeName.ReplaceAllString(text, ""), ": ")
	if !ok || strings.ContainsAny(k, " \t") {
		return ""
	}
	return k
}

// keyLines maps the keys a TOML file sets to their lines: "server.listen",
// "route[1].path" (the second [[route]]), and each table header, as
// "server" or "route[1]". bare holds the same without indexes
// ("route.path"), first occurrence, for the decoder's unknown keys, which
// it names without one.
type keyLines struct {
	exact, bare map[string]int
	// tables are the table headers in file order, indexed ("route[1]").
	tables []keyLine
	// names are the names of array elements: "upstream[1]" -> "api".
	names map[string]string
}

type keyLine struct {
	key  string
	line int
}

// scanKeyLines reads src line by line: table headers, keys (bare, quoted
// or dotted) and values, skipping what a value spans over several lines
// (arrays, inline tables, multi-line strings). It is not a TOML parser:
// the decoder has accepted src, and this only finds where keys are.
func scanKeyLines(src []byte) keyLines {
	kl := keyLines{exact: map[string]int{}, bare: map[string]int{}, names: map[string]string{}}
	set := func(key string, n int) {
		if _, ok := kl.exact[key]; !ok {
			kl.exact[key] = n
		}
		b := arrayIndex.ReplaceAllString(key, "")
		if _, ok := kl.bare[b]; !ok {
			kl.bare[b] = n
		}
	}
	counts := map[string]int{}
	table, depth, multi := "", 0, ""
	for i, line := range strings.Split(string(src), "\n") {
		n := i + 1
		if depth > 0 || multi != "" {
			depth, multi = scanValue(line, depth, multi)
			continue
		}
		l := strings.TrimSpace(line)
		switch {
		case l == "" || l[0] == '#':
		case strings.HasPrefix(l, "[["):
			end := strings.Index(l, "]]")
			if end < 0 {
				continue
			}
			name := dottedKey(l[2:end])
			table = fmt.Sprintf("%s[%d]", name, counts[name])
			counts[name]++
			set(table, n)
			kl.tables = append(kl.tables, keyLine{table, n})
		case l[0] == '[':
			end := strings.Index(l, "]")
			if end < 0 {
				continue
			}
			table = dottedKey(l[1:end])
			set(table, n)
			kl.tables = append(kl.tables, keyLine{table, n})
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				continue
			}
			key := dottedKey(k)
			if table != "" {
				key = table + "." + key
			}
			set(key, n)
			if strings.HasSuffix(table, "]") && key == table+".name" {
				if s, ok := tomlString(v); ok {
					kl.names[table] = s
				}
			}
			depth, multi = scanValue(v, 0, "")
		}
	}
	return kl
}

var arrayIndex = regexp.MustCompile(`\[\d+\]`)

// indexed is key, as the decoder names it without indexes
// ("upstream.timeout"), in the array element the file is in at line, as
// Validate names it: "upstream[1] (api).timeout". A key outside an array
// of tables comes back as it was.
func (kl keyLines) indexed(key string, line int) string {
	var in string
	for _, t := range kl.tables {
		if t.line > line {
			break
		}
		in = t.key
	}
	bare := arrayIndex.ReplaceAllString(in, "")
	rest, ok := strings.CutPrefix(key, bare+".")
	if in == bare || !ok {
		return key
	}
	if name, ok := kl.names[in]; ok {
		return withName(in, name) + "." + rest
	}
	return in + "." + rest
}

// escapedRune is a rune as strconv.QuoteToASCII escapes it.
var escapedRune = regexp.MustCompile(`\\u[0-9a-f]{4}|\\U[0-9a-f]{8}`)

// find returns the line of key, else of its closest enclosing table, else
// of key without indexes; 0 if none is in the file.
func (kl keyLines) find(key string) int {
	if key == "" {
		return 0
	}
	// A key with other than ASCII in it is shown escaped and quoted
	// (unknownKeys): the file has it raw.
	key = dottedKey(escapedRune.ReplaceAllStringFunc(key, func(e string) string {
		r, _ := strconv.ParseUint(e[2:], 16, 32)
		return string(rune(r))
	}))
	for k := key; k != ""; {
		if n, ok := kl.exact[k]; ok {
			return n
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return kl.bare[arrayIndex.ReplaceAllString(key, "")]
}

// withName is an array element's key with its name, as problems show it:
// "route[2] (orders)". A name a terminal would not print as written (a
// line break, an escape sequence) is quoted, so that it cannot pass for
// more lines of the report.
func withName(key, name string) string {
	if q := strconv.Quote(name); q[1:len(q)-1] != name {
		name = q
	}
	return key + " (" + name + ")"
}

// tomlString is the one-line string value v (after its "="), basic or
// literal, with a comment after it; ok is false for anything else.
func tomlString(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '\'' {
		if end := strings.IndexByte(v[1:], '\''); end >= 0 {
			return v[1 : end+1], true
		}
		return "", false
	}
	if len(v) < 2 || v[0] != '"' || strings.HasPrefix(v, `"""`) {
		return "", false
	}
	// Up to the closing quote, past escapes: a '#' inside is no comment.
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			s, err := strconv.Unquote(v[:i+1])
			return s, err == nil
		}
	}
	return "", false
}

// dottedKey normalizes a TOML key as written (` a . "b" `) to "a.b".
func dottedKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// closingQuotes is where in s the delimiter q closes a multi-line string,
// -1 if s holds none. In a basic one (""") an escaped quote closes
// nothing: """a\""" goes on to the next line.
func closingQuotes(s, q string) int {
	for i := 0; i < len(s); i++ {
		switch {
		case q == `"""` && s[i] == '\\':
			i++
		case strings.HasPrefix(s[i:], q):
			return i
		}
	}
	return -1
}

// scanValue reads one line of a value and returns how many brackets are
// still open after it and the delimiter of a multi-line string still
// open ("" if none); depth and multi are what was open before it.
func scanValue(s string, depth int, multi string) (int, string) {
	for i := 0; i < len(s); i++ {
		if multi != "" {
			end := closingQuotes(s[i:], multi)
			if end < 0 {
				return depth, multi
			}
			i += end + len(multi) - 1
			multi = ""
			continue
		}
		switch c := s[i]; c {
		case '#':
			return depth, ""
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case '"', '\'':
			if strings.HasPrefix(s[i:], strings.Repeat(string(c), 3)) {
				multi = strings.Repeat(string(c), 3)
				i += 2
				continue
			}
			// A one-line string: up to its closing quote, past escapes in
			// a basic one.
			for i++; i < len(s) && s[i] != c; i++ {
				if c == '"' && s[i] == '\\' {
					i++
				}
			}
		}
	}
	return depth, multi
}
