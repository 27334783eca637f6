package proxy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/wxgate/wxgate/session"
	"github.com/wxgate/wxgate/wechat"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from what the code does")

// timeoutError is a cause that reports a timeout, as a net.Error does.
type timeoutError struct{}

func (timeoutError) Error() string { return "i/o timeout" }
func (timeoutError) Timeout() bool { return true }

// problemSamples are an error a handler returns for each problem, made the
// way the handlers make them.
func problemSamples() map[problem]error {
	const start = "/_wxgate/start?rd=%2Forders%2F7&scope=base"
	return map[problem]error{
		problemInternal:          errors.New("something nobody classified"),
		problemBadRequest:        invalidRequest(errors.New("a bad path")),
		problemVersion:           malformed(errVersion),
		problemMethodNotAllowed:  fiber.ErrMethodNotAllowed,
		problemRequestTimeout:    fiber.ErrRequestTimeout,
		problemBodyTooLarge:      fiber.ErrRequestEntityTooLarge,
		problemHeadersTooLarge:   fiber.ErrRequestHeaderFieldsTooLarge,
		problemNotFound:          fiber.ErrNotFound,
		problemLoginRequired:     loginRequired(start),
		problemInsufficientScope: insufficientScope("/_wxgate/start?rd=%2Fprofile%2F&scope=userinfo"),
		problemForbidden:         forbidden(errors.New("route denied")),
		problemTokenExpired:      fmt.Errorf("%w: exp", session.ErrTokenExpired),
		problemInvalidToken:      fmt.Errorf("%w: signature", session.ErrInvalidToken),
		problemInvalidGrant:      fmt.Errorf("%w: reused", session.ErrInvalidGrant),
		problemLoginExpired:      loginExpired("/_wxgate/start"),
		problemOtherBrowser:      otherBrowser("/_wxgate/start?rd=%2Forders%2F7"),
		problemRefused:           refused("/_wxgate/start?rd=%2Forders%2F7"),
		problemCodeInvalid:       codeInvalid("/_wxgate/start?rd=%2Forders%2F7"),
		problemTooManyLogins:     tooManyLogins(errors.New("client bound")),
		problemTooManyWebSockets: tooManyWebSockets(errTunnelsOfClient),
		problemWebSocketsFull:    webSocketsFull(errTunnelsFull),
		problemWeChatError:       fmt.Errorf("exchanging code: %w", &wechat.Error{Code: 40013, Msg: "invalid appid", Endpoint: "/sns/oauth2/access_token"}),
		problemWeChatUnavailable: wechatUnavailable(errors.New("token expired, refresh failing"), 5*time.Second),
		problemAppTokenBlocked:   appTokenBlocked(wechat.ErrBlocked),
		problemUnavailable:       storeError(session.ErrUnavailable),
		problemUpstreamDown:      upstreamError("app", errors.New("connection refused")),
		problemUpstreamTimeout:   upstreamError("app", timeoutError{}),
	}
}

// TestProblemsGolden renders every problem as the answer a browser gets in
// zh-CN and in English and an API client gets as JSON, and compares them
// with testdata/problems/NAME.txt (go test -update rewrites them). Status,
// headers (WWW-Authenticate, Retry-After) and bodies are what users see.
func TestProblemsGolden(t *testing.T) {
	samples := problemSamples()
	s := &Server{log: slog.New(slog.DiscardHandler)}
	app := fiber.New(fiber.Config{ErrorHandler: s.handleError, DisableStartupMessage: true})
	app.Get("/:problem", func(c *fiber.Ctx) error {
		requestOf(c).id = "0123456789abcdef0123456789abcdef"
		for p, err := range samples {
			if p.String() == c.Params("problem") {
				return err
			}
		}
		return errors.New("no sample")
	})
	for p := range numProblems {
		t.Run(p.String(), func(t *testing.T) {
			err, ok := samples[p]
			if !ok {
				t.Fatalf("no sample error for problem %s: add one to problemSamples", p)
			}
			if got := classify(err).problem; got != p {
				t.Fatalf("classify(%v) = %s, want %s", err, got, p)
			}
			var out bytes.Buffer
			for _, r := range []struct{ name, header, value string }{
				{"browser, zh-CN", "Accept-Language", "zh-CN,zh;q=0.9"},
				{"browser, en", "Accept-Language", "en-US,en;q=0.9"},
				{"API client", "Accept", "application/json"},
			} {
				req := httptest.NewRequest(http.MethodGet, "/"+p.String(), nil)
				req.Header.Set(r.header, r.value)
				resp, err := app.Test(req, -1)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&out, "-- %s (%s: %s) --\n", r.name, r.header, r.value)
				dumpResponse(&out, resp)
			}
			golden := filepath.Join("testdata", "problems", p.String()+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("%s differs (-want +got):\n%s", golden, diff)
			}
		})
	}
}

// dumpResponse writes the status, the headers but Date in order, and the
// body.
func dumpResponse(w io.Writer, resp *http.Response) {
	fmt.Fprintf(w, "%s\n", resp.Status)
	names := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		if k != "Date" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(w, "\n%s\n", bytes.TrimRight(body, "\n"))
}

// TestProblemsTable checks the table for what no golden file would show:
// every problem has a name of its own, a page the messages hold, a code and
// an error status.
func TestProblemsTable(t *testing.T) {
	seen := map[string]bool{}
	for p := range numProblems {
		e := problems[p]
		if e.name == "" || seen[e.name] {
			t.Errorf("problem %d: name %q is empty or taken", p, e.name)
		}
		seen[e.name] = true
		if _, ok := messages[e.page]; !ok {
			t.Errorf("problem %s: page %q is not in messages", e.name, e.page)
		}
		if e.code == "" || e.status < 400 || e.status > 599 {
			t.Errorf("problem %s: code %q, status %d", e.name, e.code, e.status)
		}
	}
}

// TestDescriptionsInChinese: every English error_description of the table
// has its Chinese one, so a client asking for Chinese never gets the page
// text of another problem.
func TestDescriptionsInChinese(t *testing.T) {
	for _, p := range problems {
		if p.desc != "" && descZh[p.desc] == "" {
			t.Errorf("%s: no Chinese for %q", p.name, p.desc)
		}
	}
}
