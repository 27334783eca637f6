package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// The edge is what every request must pass before any decision (DESIGN.md
// "The edge"): strict HTTP/1.1 framing and headers (RFC 9110, RFC 9112),
// and one reading of the host. fasthttp already refuses most malformed
// requests while parsing; these checks make the refusal wxgate's own, so
// that a fasthttp change cannot silently let one through, and they cover
// what fasthttp accepts: bare LF line ends, obs-fold, Content-Length with
// Transfer-Encoding, transfer codings other than chunked, and an
// absolute-form target whose authority differs from Host.

// errHead is the cause of every refusal of the edge.
var errHead = errors.New("proxy: malformed request")

// errVersion refuses a request line whose version is not HTTP/1.0 or
// HTTP/1.1 (answered 505, RFC 9110 section 15.6.6).
var errVersion = fmt.Errorf("%w: HTTP version not supported", errHead)

func headError(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errHead, fmt.Sprintf(format, a...))
}

// request is what wxgate learned of a request, once: every later step
// reads it instead of the headers. requestIDMiddleware makes it with the
// ID and whether the peer is trusted, the edge adds what it read of the
// head, and forward the route and the caller.
type request struct {
	// id is the request ID (X-Request-ID).
	id string
	// idBuf holds a generated id.
	idBuf [32]byte
	// route names the route taken, for logs and metrics; empty: "wxgate".
	route string
	// host is the host name routes match: lowercase, without a trailing dot
	// or a port.
	host string
	// authority is host with the port the client gave, if any: the Host
	// the upstream receives.
	authority string
	// scheme is the scheme the client used: the connection's, or a trusted
	// proxy's X-Forwarded-Proto.
	scheme string
	// trusted reports whether the peer is a trusted proxy.
	trusted bool
	// client is the client's address (X-Forwarded-For from trusted
	// proxies).
	client netip.Addr
	// api is set once the request's route is known and is an api route:
	// then every error answers JSON.
	api bool
	// upgrade: the request asks for a WebSocket; errors answer JSON, and a
	// missing login 401, since no WebSocket client follows a redirect.
	upgrade bool
	// who is the caller, when the route needed one (currentCaller).
	who caller
	// upstream names the upstream the request went to, for the access
	// line; empty when it went to none.
	upstream string
	// userBuf holds the user's log pseudonym ([log] users = "hashed").
	userBuf [16]byte
	// clientBuf holds client's text form for the access line.
	clientBuf [64]byte
}

// clientString is r.client as text, kept in r: no allocation of its own.
func (r *request) clientString() string {
	if !r.client.IsValid() {
		return ""
	}
	b := r.client.AppendTo(r.clientBuf[:0])
	if len(b) == 0 || &b[0] != &r.clientBuf[0] {
		return string(b)
	}
	return unsafe.String(&b[0], len(b))
}

// edge checks a request and records its request. A malformed request gets
// 400 and its connection is closed: after a framing error nothing that
// follows on the connection can be trusted to be a request boundary.
func (s *Server) edge(c *fiber.Ctx) error {
	r := requestOf(c)
	if err := s.readRequest(c, r); err != nil {
		r.route = "invalid"
		return malformed(err)
	}
	return c.Next()
}

// requestOf returns what was recorded of c.
func requestOf(c *fiber.Ctx) *request {
	r, _ := c.Locals(requestKey).(*request)
	if r == nil {
		// Only the admin listener and tests reach handlers without
		// requestIDMiddleware and the edge; they get an empty request ID and
		// the connection's own view.
		r = &request{scheme: "http"}
		c.Locals(requestKey, r)
	}
	return r
}

// readRequest checks the head of c and records what it says in r, whose
// trusted requestIDMiddleware set.
func (s *Server) readRequest(c *fiber.Ctx, r *request) error {
	// First: a request refused below still has its client in the access
	// line, and those are the ones worth tracing.
	r.client = s.clientAddr(c, r.trusted)
	h := &c.Request().Header
	if h.IsConnect() {
		return headError("CONNECT is not proxied")
	}
	if p := string(h.Protocol()); p != "HTTP/1.1" && p != "HTTP/1.0" {
		return errVersion
	}
	if err := checkHead(h.RawHeaders()); err != nil {
		return err
	}
	host, authority, err := parseHost(string(h.Host()))
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if target := h.RequestURI(); hasScheme(target) {
		if err := sameAuthority(target, authority); err != nil {
			return err
		}
	}
	r.host, r.authority = host, authority
	r.scheme = "http"
	if c.Context().IsTLS() {
		r.scheme = "https"
	}
	if r.trusted {
		if v := h.Peek(fiber.HeaderXForwardedHost); len(v) > 0 {
			if r.host, r.authority, err = parseHost(string(v)); err != nil {
				return fmt.Errorf("X-Forwarded-Host: %w", err)
			}
		}
		switch string(h.Peek(fiber.HeaderXForwardedProto)) {
		case "https":
			r.scheme = "https"
		case "http":
			r.scheme = "http"
		}
	}
	return nil
}

// checkHead checks the header block of a request as it came off the wire
// (without the request line). Each line must end in CRLF; a bare CR or LF,
// NUL or another control character in a value, a folded line (obs-fold),
// a malformed name, a Content-Length that is not one plain number,
// Transfer-Encoding other than one "chunked", Transfer-Encoding with
// Content-Length, and anything but exactly one Host are refused: each is
// a way to make wxgate and an upstream disagree on where a header or a
// request ends.
func checkHead(raw []byte) error {
	var contentLength, transferEncoding, host int
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return headError("header block without a line end")
		}
		line := raw[:i]
		raw = raw[i+1:]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return headError("a header line ends in a bare LF")
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			if len(raw) > 0 {
				return headError("bytes after the end of the header block")
			}
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return headError("a folded header line (obs-fold)")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return headError("a header line without a name")
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, b := range name {
			if !isTokenChar(b) {
				return headError("header name %q", name)
			}
		}
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return headError("a control character (%#x) in the value of %s", b, name)
			}
		}
		switch {
		case equalFold(name, "content-length"):
			contentLength++
			if len(value) == 0 || len(value) > 18 || !allDigits(value) {
				return headError("Content-Length %q", value)
			}
		case equalFold(name, "transfer-encoding"):
			transferEncoding++
			if !equalFold(value, "chunked") {
				return headError("Transfer-Encoding %q: only chunked is accepted", value)
			}
		case equalFold(name, "host"):
			host++
		}
	}
	switch {
	case contentLength > 1:
		return headError("several Content-Length headers")
	case transferEncoding > 1:
		return headError("several Transfer-Encoding headers")
	case contentLength > 0 && transferEncoding > 0:
		return headError("both Transfer-Encoding and Content-Length")
	case host == 0:
		return headError("no Host header")
	case host > 1:
		return headError("several Host headers")
	}
	return nil
}

// parseHost checks a Host value (RFC 9110 section 7.2: uri-host [":" port])
// and returns the name routes match (lowercase, one trailing dot dropped,
// no port) and the authority to forward (that name with the port, if
// given). Names are DNS names (letters, digits, '-', '_'), IPv4 addresses
// or bracketed IPv6 addresses; ports are 1 to 65535.
func parseHost(v string) (name, authority string, err error) {
	if v == "" {
		return "", "", headError("empty host")
	}
	if len(v) > 270 {
		return "", "", headError("host over 270 bytes")
	}
	hostPart, port := v, ""
	if v[0] == '[' {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return "", "", headError("host %q: unclosed [", v)
		}
		a, err := netip.ParseAddr(v[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", headError("host %q: not an IPv6 address", v)
		}
		hostPart, port = "["+a.String()+"]", v[end+1:]
		if port != "" {
			if port[0] != ':' {
				return "", "", headError("host %q: junk after ]", v)
			}
			port = port[1:]
			if port, err = parsePort(port); err != nil {
				return "", "", err
			}
		}
		name = hostPart
	} else {
		if i := strings.IndexByte(v, ':'); i >= 0 {
			hostPart, port = v[:i], v[i+1:]
			if port, err = parsePort(port); err != nil {
				return "", "", err
			}
		}
		if name, err = parseName(hostPart); err != nil {
			return "", "", err
		}
	}
	switch {
	case port == "":
		authority = name
	case len(v) == len(name)+1+len(port) && v[:len(name)] == name && v[len(name)+1:] == port:
		authority = v // already canonical: no allocation on the hot path
	default:
		authority = name + ":" + port
	}
	return name, authority, nil
}

// isIP reports whether host (as parseHost returns it) is an IP literal.
func isIP(host string) bool {
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}

// parseName checks a DNS name or IPv4 address and returns it lowercase,
// without one trailing dot.
func parseName(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return "", headError("host name %q", h)
	}
	label := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '.':
			if label == 0 {
				return "", headError("host name %q: empty label", h)
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
		default:
			return "", headError("host name %q: character %q", h, c)
		}
		if label++; label > 63 {
			return "", headError("host name %q: label over 63 bytes", h)
		}
	}
	if label == 0 {
		return "", headError("host name %q: empty label", h)
	}
	return strings.ToLower(h), nil
}

// parsePort checks a port and returns it without leading zeros.
func parsePort(p string) (string, error) {
	if p == "" || len(p) > 5 || !allDigits([]byte(p)) {
		return "", headError("port %q", p)
	}
	n, _ := strconv.Atoi(p)
	if n < 1 || n > 65535 {
		return "", headError("port %q out of range", p)
	}
	if p[0] != '0' {
		return p, nil
	}
	return strconv.Itoa(n), nil
}

// hasScheme reports whether a request target is in absolute form
// ("http://host/path").
func hasScheme(target []byte) bool {
	return len(target) > 0 && target[0] != '/' && bytes.Contains(target, []byte("://"))
}

// sameAuthority checks that an absolute-form target names the authority
// of the Host header (RFC 9112 section 3.2.2): a proxy in front that read
// one and wxgate the other would route the request to different places.
func sameAuthority(target []byte, hostAuthority string) error {
	scheme, rest, _ := strings.Cut(string(target), "://")
	scheme = strings.ToLower(scheme)
	if scheme != "http" && scheme != "https" {
		return headError("request target scheme %q", scheme)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	if strings.Contains(auth, "@") {
		return headError("userinfo in the request target")
	}
	_, a, err := parseHost(auth)
	if err != nil {
		return fmt.Errorf("request target: %w", err)
	}
	def := map[string]string{"http": ":80", "https": ":443"}[scheme]
	if strings.TrimSuffix(a, def) != strings.TrimSuffix(hostAuthority, def) {
		return headError("request target authority %q is not the Host %q", a, hostAuthority)
	}
	return nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isTokenChar reports whether b may appear in a header name (RFC 9110
// section 5.6.2 tchar).
func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// equalFold reports whether b equals the lowercase ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// clientBody passes the client's request body to the upstream and keeps
// the first read failure, so that a malformed body (broken chunk framing,
// a client that stops before Content-Length) is answered as the client's
// error (400), not as the upstream's (502). The failure is sticky and comes
// without data: fasthttp's chunked writer ignores an error that arrives with
// bytes and would go on to send a body the client never framed correctly.
type clientBody struct {
	r io.Reader
	// trailers reports whether the body carried trailer fields.
	trailers func() bool
	// hungUp reports whether the client closed its sending side before the
	// body's end was read (nil: not known).
	hungUp func() bool
	err    error
	// resp receives the upstream's answer: before the first byte is read,
	// the connection it is going out on is checked (beginBody), so that no
	// byte of a body is spent on a connection the upstream has closed.
	resp *fasthttp.Response
	// n counts the bytes passed on; a body none of which was read can go
	// out again.
	n int64
}

// errCutOff refuses a chunked body that ended with the connection before
// its terminating CRLF: fasthttp reads a trailer section cut off by the end
// of the connection as the end of the body, and the upstream would get a
// complete request the client never finished.
var errCutOff = errors.New("proxy: the request body was cut off")

// errTrailers refuses trailer fields in a request body: fasthttp would
// forward them after the last chunk, past the header stripping, and some
// upstreams merge trailers into the headers (a forged X-WeChat-OpenID).
// No upstream behind a login gateway needs them.
var errTrailers = errors.New("proxy: trailer fields in a request body are not accepted")

func (b *clientBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.n == 0 && b.resp != nil {
		// Not the client's error: b.err stays nil.
		if err := beginBody(b.resp); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF && b.trailers():
		b.err = errTrailers
		return 0, b.err
	case err == io.EOF && b.hungUp != nil && b.hungUp():
		b.err = errCutOff
		return 0, b.err
	case err != nil && err != io.EOF:
		b.err = err
		return 0, err
	}
	return n, err
}

// hasTrailers reports whether h holds trailer fields (received after the
// last chunk of a body).
func hasTrailers(h *fasthttp.RequestHeader) bool { return len(h.TrailerHeader()) > 2 }

// hangupListener wraps the public listener's connections so that a request
// body can tell whether the client hung up before the body ended.
type hangupListener struct{ net.Listener }

func (l hangupListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, isTLS := c.(interface{ ConnectionState() tls.ConnectionState }); isTLS {
		return c, nil // fasthttp must still see the TLS connection
	}
	return &hangupConn{Conn: c}, nil
}

// hangupConn notes the end of what the client sends. fasthttp reads the
// connection only as far as it needs, so an end seen while a body is still
// being read means the body was cut off; a client that hangs up after a
// complete body is not seen until the next read.
type hangupConn struct {
	net.Conn
	eof atomic.Bool
}

func (c *hangupConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// hungUp returns a report of whether the client behind ctx has hung up,
// or nil when its connection does not tell.
func hungUp(ctx *fasthttp.RequestCtx) func() bool {
	c, ok := ctx.Conn().(*hangupConn)
	if !ok {
		return nil
	}
	return c.eof.Load
}
