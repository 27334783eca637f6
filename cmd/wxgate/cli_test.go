package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// TestHelpExitsZero: --help and -h on every command print its flags to
// stdout and exit 0, having done nothing; a flag it does not know exits 2
// with the usage on stderr.
func TestHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"serve", "dev", "simulate", "check", "keygen", "version"} {
		for _, h := range []string{"--help", "-h"} {
			var out, errb bytes.Buffer
			if code := run([]string{cmd, h}, &out, &errb); code != 0 {
				t.Errorf("wxgate %s %s: exit %d, want 0\n%s", cmd, h, code, errb.String())
			}
			if !strings.HasPrefix(out.String(), "usage of wxgate "+cmd+":") || errb.Len() != 0 {
				t.Errorf("wxgate %s %s: stdout %q, stderr %q; want the usage on stdout only", cmd, h, out.String(), errb.String())
			}
		}
		var out, errb bytes.Buffer
		if code := run([]string{cmd, "--no-such-flag"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage of wxgate "+cmd) {
			t.Errorf("wxgate %s --no-such-flag: exit %d, stderr %q; want 2 and the usage", cmd, code, errb.String())
		}
	}
}

// TestLeftoverArgumentRefused: a word after the flags ends flag parsing,
// so "serve --config a.toml serve --config b.toml" (an image's ENTRYPOINT
// with the command in it, plus Kubernetes args) would serve a.toml and
// ignore b.toml. Every command refuses it with 2 instead.
func TestLeftoverArgumentRefused(t *testing.T) {
	for _, cmd := range []string{"serve", "dev", "simulate", "check", "keygen", "version"} {
		var out, errb bytes.Buffer
		args := []string{cmd, "--config", "/nonexistent/a.toml", "serve", "--config", "/nonexistent/b.toml"}
		if cmd == "version" || cmd == "keygen" {
			args = []string{cmd, "extra"}
		}
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unexpected argument") {
			t.Errorf("wxgate %s: exit %d, stderr %q; want 2 and the unexpected argument named", strings.Join(args, " "), code, errb.String())
		}
	}
}

// TestVersionLine: the -ldflags version wins; else the module version go
// install recorded; the commit, and "(modified)" for a changed tree.
func TestVersionLine(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Path: "github.com/wxgate/wxgate", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		ldflags string
		info    *debug.BuildInfo
		want    string
	}{
		{"dev", info, "wxgate v1.4.0 commit 0123abcd (modified) go1.99"},
		{"v2.0.0-rc1", info, "wxgate v2.0.0-rc1 commit 0123abcd (modified) go1.99"},
		{"dev", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "ff00"}, {Key: "vcs.modified", Value: "false"}}}, "wxgate (devel) commit ff00 go1.99"},
		{"dev", nil, "wxgate dev"},
	} {
		if got := versionLine(tc.ldflags, tc.info); got != tc.want {
			t.Errorf("versionLine(%q, ...) = %q, want %q", tc.ldflags, got, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "wxgate ") {
		t.Errorf("wxgate version: exit %d, %q", code, out.String())
	}
}

// TestShippedConfigWithoutSecrets: on a machine without the production
// secrets, check of the shipped gateway.toml passes with a warning per
// unset variable, naming its line; --strict and serve refuse it; simulate
// registers its four apps with made-up secrets.
func TestShippedConfigWithoutSecrets(t *testing.T) {
	vars := []string{"WXGATE_OA_SECRET", "WXGATE_WEBSITE_SECRET", "WXGATE_MINIPROGRAM_SECRET", "WXGATE_APP_SECRET"}
	for _, v := range vars {
		t.Setenv(v, "")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", "../../gateway.toml"}, &out, &errb); code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, v := range vars {
		if !strings.Contains(out.String(), ": warning: ") || !strings.Contains(out.String(), "environment variable "+v+" is empty or unset") {
			t.Errorf("check: no warning for %s:\n%s", v, out.String())
		}
	}
	shipped, err := os.ReadFile("../../gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(string(shipped[:strings.Index(string(shipped), `secret_env = "WXGATE_OA_SECRET"`)]), "\n")
	if !strings.Contains(out.String(), fmt.Sprintf("gateway.toml:%d: warning: wechat.official_account.secret_env", line)) {
		t.Errorf("check: the warning does not name the line:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"check", "--strict", "--config", "../../gateway.toml"}, &out, &errb); code != 1 || strings.Contains(out.String(), "warning:") {
		t.Errorf("check --strict: exit %d, want 1 with problems, not warnings\n%s", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"serve", "--config", "../../gateway.toml"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "WXGATE_OA_SECRET is empty or unset") {
		t.Errorf("serve without secrets: exit %d, want 1 naming the variable\n%s", code, errb.String())
	}
	errb.Reset()
	apps, ok := loadSimApps("../../gateway.toml", &errb)
	if !ok || len(apps) != 4 {
		t.Fatalf("simulate: %d apps, ok %v\n%s", len(apps), ok, errb.String())
	}
	for _, a := range apps {
		if a.Secret == "" {
			t.Errorf("simulate: app %s without a secret", a.AppID)
		}
	}
	if n := strings.Count(errb.String(), "the simulator made up a secret"); n != 4 {
		t.Errorf("simulate: %d warnings, want 4:\n%s", n, errb.String())
	}
}

// TestStrayArgumentsRefused: an argument that is not a flag is an error
// (exit 2, the usage on stderr), not ignored: "wxgate check prod.toml"
// used to check gateway.toml instead, drop the flags after the file name
// and say ok; "wxgate serve prod.toml" started on gateway.toml.
func TestStrayArgumentsRefused(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/prod.toml"
	if err := os.WriteFile(bad, []byte("[server]\nlistn = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", bad},
		{"check", "--config", "../../gateway.toml", bad},
		{"check", bad, "--strict"},
		{"serve", bad},
		{"dev", bad},
		{"simulate", bad},
		{"keygen", "--out", dir + "/k.pem", "extra"},
		{"version", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unexpected argument") {
			t.Errorf("wxgate %q: exit %d, stdout %q, stderr %q; want 2 naming the argument", args, code, out.String(), errb.String())
		}
	}
	if _, err := os.Stat(dir + "/k.pem"); err == nil {
		t.Error("keygen wrote a key despite the stray argument")
	}
}
