package proxy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxgate/wxgate/proxy"
)

// FuzzConfigCheck: no config file and no WXGATE_* variable makes Check panic,
// and a config it refuses comes with at least one problem that is not a
// warning.
func FuzzConfigCheck(f *testing.F) {
	shipped, err := os.ReadFile("../gateway.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(shipped), "")
	f.Add(checkConf, "WXGATE_SERVER_LISTEN=oops")
	f.Add(checkConf+"\n[[route]]\nname = \"x\"\npath = \"/x/**\"\nacton = \"public\"\n", "WXGATE_SESION_TTL=1h")
	f.Add("[server]\nlisten = \"\"\"\n:1\n\"\"\"\n[[route]]\n[[route]]\npath = [\n\"a\",\n]\n", "WXGATE_ROUTE=1")
	f.Add("a.\"b\".c = 1\n[x.y]\n['z']\n[[q.r]]\n", "WXGATE_SERVER_TRUSTED_PROXIES=,,")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, conf, env string) {
		path := filepath.Join(dir, "gw.toml")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		var vars []string
		if strings.HasPrefix(env, "WXGATE_") {
			vars = append(vars, env)
		}
		cfg, problems := proxy.Check(path, proxy.CheckOptions{Env: vars, UnsetSecretsWarn: true})
		if cfg != nil {
			return
		}
		for _, p := range problems {
			_ = p.String()
			if !p.Warning {
				return
			}
		}
		t.Fatalf("refused without a problem: %v", problems)
	})
}
