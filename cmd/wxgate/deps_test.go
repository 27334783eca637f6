package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/wxgate/wxgate/"

// TestDeps enforces the direction of imports (STYLE.md 1): cmd/wxgate ->
// proxy -> policies, session, wechat, metrics; nothing imports proxy; only
// proxy and the binary speak fiber.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := map[string]map[string]string{
		"policies": {
			"*": "policies is pure Go: method, host, path and identity in, a decision out",
		},
		"session": {
			module + "proxy":              "lower packages never import proxy",
			"github.com/gofiber/fiber/v2": "sessions know nothing of HTTP; proxy sets cookies",
			"github.com/valyala/fasthttp": "sessions know nothing of HTTP",
			module + "policies":           "sessions do not decide access",
			module + "wechat":             "sessions keep WeChat's tokens (internal/secret) but never call WeChat",
		},
		"wechat": {
			module + "proxy":              "lower packages never import proxy",
			module + "session":            "the WeChat client holds no sessions",
			"github.com/gofiber/fiber/v2": "the client speaks net/http to WeChat",
			module + "metrics":            "wechat reports through the OnCall hook",
		},
		"wechat/wechatsim": {
			module + "proxy":              "the simulator stands for WeChat, not the gateway",
			module + "session":            "the simulator stands for WeChat, not the gateway",
			"github.com/gofiber/fiber/v2": "the simulator is a plain http.Handler",
		},
		"metrics": {
			module + "proxy":              "lower packages never import proxy",
			"github.com/gofiber/fiber/v2": "only proxy and cmd/wxgate import fiber",
		},
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		rules, ok := forbidden[pkg]
		if !ok {
			continue
		}
		seen++
		for _, imp := range fields[1:] {
			if why, bad := rules[imp]; bad {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
			if why, pure := rules["*"]; pure && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
		}
	}
	if seen != len(forbidden) {
		t.Errorf("checked %d packages, want %d: the package list changed", seen, len(forbidden))
	}
}
