package deploytest

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// minimalBases are the runtime images the final stage may use: no shell,
// no package manager.
var minimalBases = []string{"scratch", "gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12"}

// parseDockerfile parses src as docker build would, with every lint rule
// buildkit runs at parse time, and returns the parser's and linter's
// warnings.
func parseDockerfile(src []byte) ([]instructions.Stage, []string, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, w := range res.Warnings {
		warnings = append(warnings, fmt.Sprintf("parser: %s (%v)", w.Short, w.Location))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		warnings = append(warnings, fmt.Sprintf("lint %s: %s (%v)", rule, msg, loc))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	return stages, warnings, err
}

// checkImage returns what is wrong with the image the stages build.
func checkImage(stages []instructions.Stage) []string {
	var bad []string
	if len(stages) < 2 {
		return append(bad, "not multi-stage: the toolchain would ship in the image")
	}
	final := stages[len(stages)-1]
	if !slices.Contains(minimalBases, final.BaseName) {
		bad = append(bad, "final stage FROM "+final.BaseName+": not a minimal base")
	}
	var builds []string
	static := false
	for _, st := range stages[:len(stages)-1] {
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					if kv.Key == "CGO_ENABLED" && kv.Value == "0" {
						static = true
					}
				}
			case *instructions.RunCommand:
				line := strings.Join(c.CmdLine, " ")
				if strings.Contains(line, "go build") {
					builds = append(builds, line)
					if strings.Contains(line, "CGO_ENABLED=0") {
						static = true
					}
				}
			}
		}
	}
	if len(builds) == 0 {
		bad = append(bad, "no go build in a builder stage")
	}
	if !static {
		bad = append(bad, "CGO_ENABLED=0 not set: the binary would not be static")
	}
	for _, b := range builds {
		if !strings.Contains(b, "-trimpath") || !strings.Contains(b, "-X main.version=") {
			bad = append(bad, "go build without -trimpath and the version stamp: "+b)
		}
	}
	var user, entry, cmd string
	copiedBinary, copiedConfig := false, false
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				bad = append(bad, "ENTRYPOINT in shell form: no shell in the image, and signals would not reach wxgate")
			}
			entry = strings.Join(c.CmdLine, " ")
		case *instructions.CmdCommand:
			if c.PrependShell {
				bad = append(bad, "CMD in shell form: no shell in the image, and signals would not reach wxgate")
			}
			cmd = strings.Join(c.CmdLine, " ")
		case *instructions.CopyCommand:
			if c.From != "" && c.DestPath == "/wxgate" {
				copiedBinary = true
			}
			if c.From == "" && slices.Contains(c.SourcePaths, "gateway.toml") && c.DestPath == "/etc/wxgate/gateway.toml.example" {
				copiedConfig = true
			}
		case *instructions.RunCommand:
			bad = append(bad, "RUN in the final stage: "+strings.Join(c.CmdLine, " "))
		}
	}
	for _, st := range stages {
		for _, c := range st.Commands {
			if e, ok := c.(*instructions.EnvCommand); ok {
				for _, kv := range e.Env {
					if secretLike.MatchString(kv.Key) {
						bad = append(bad, "ENV "+kv.Key+": a secret baked into the image")
					}
				}
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		bad = append(bad, "USER "+strconv.Quote(user)+": not a numeric non-root user (Kubernetes' runAsNonRoot needs a number)")
	}
	if entry != "/wxgate" {
		// Arguments given to the container (Kubernetes args) replace CMD
		// but are appended to ENTRYPOINT, after a command that takes none.
		bad = append(bad, "ENTRYPOINT "+strconv.Quote(entry)+": not just /wxgate, the command and its flags belong in CMD")
	}
	if cmd != "serve --config /etc/wxgate/gateway.toml" {
		bad = append(bad, "CMD "+strconv.Quote(cmd)+": not the serve command")
	}
	if !copiedBinary {
		bad = append(bad, "the binary is not copied from the builder to /wxgate")
	}
	if !copiedConfig {
		bad = append(bad, "gateway.toml is not shipped as /etc/wxgate/gateway.toml.example")
	}
	return bad
}

var secretLike = regexp.MustCompile(`(?i)secret|password|passwd|token|_key$|apikey`)

func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages, warnings, err := parseDockerfile(src)
	if err != nil {
		t.Fatalf("parsing the Dockerfile: %v", err)
	}
	for _, w := range warnings {
		t.Error("Dockerfile " + w)
	}
	for _, p := range checkImage(stages) {
		t.Error(p)
	}
}

// TestDockerfileChecksFail mutates the real Dockerfile in each way the
// checks exist for and wants each caught: a check that cannot fail proves
// nothing.
func TestDockerfileChecksFail(t *testing.T) {
	src, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"root user", "USER 65532:65532", "USER 0", "not a numeric non-root"},
		{"named user", "USER 65532:65532", "USER nonroot", "not a numeric non-root"},
		{"no user", "USER 65532:65532\n", "", "not a numeric non-root"},
		{"fat base", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:bookworm", "not a minimal base"},
		{"cgo", "ENV CGO_ENABLED=0 ", "ENV CGO_ENABLED=1 ", "not be static"},
		{"shell entrypoint", `ENTRYPOINT ["/wxgate"]`, "ENTRYPOINT /wxgate", "shell form"},
		{"shell cmd", `CMD ["serve", "--config", "/etc/wxgate/gateway.toml"]`, "CMD /wxgate serve --config /etc/wxgate/gateway.toml", "shell form"},
		{"command in the entrypoint", "ENTRYPOINT [\"/wxgate\"]\nCMD [", "ENTRYPOINT [\"/wxgate\", ", "not just /wxgate"},
		{"dev entrypoint", `"serve", "--config"`, `"dev", "--config"`, "not the serve command"},
		{"baked secret", "ARG VERSION=dev\n", "ARG VERSION=dev\nENV WXGATE_OA_SECRET=abc\n", "secret baked"},
		{"no example config", "COPY gateway.toml /etc/wxgate/gateway.toml.example\n", "", "gateway.toml.example"},
		{"no trimpath", "-trimpath ", "", "-trimpath"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mut := strings.Replace(string(src), tc.from, tc.to, 1)
			if mut == string(src) {
				t.Fatalf("the Dockerfile has no %q to mutate", tc.from)
			}
			stages, _, err := parseDockerfile([]byte(mut))
			if err != nil {
				t.Fatalf("parsing: %v", err)
			}
			probs := checkImage(stages)
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("mutation not caught: want a problem with %q, got %q", tc.want, probs)
			}
		})
	}
	// Single stage.
	stages, _, err := parseDockerfile([]byte("FROM golang:1.26\nRUN CGO_ENABLED=0 go build -trimpath -ldflags '-X main.version=1' ./cmd/wxgate\n"))
	if err != nil {
		t.Fatal(err)
	}
	if probs := checkImage(stages); !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, "multi-stage") }) {
		t.Errorf("single stage not caught: %q", probs)
	}
	// The linter itself: a lower-case "as" is one of its rules.
	_, warned, err := parseDockerfile([]byte("FROM golang:1.26 as build\nFROM scratch\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(warned, func(w string) bool { return strings.Contains(w, "FromAsCasing") }) {
		t.Errorf("buildkit's linter did not run: warnings %q", warned)
	}
}
