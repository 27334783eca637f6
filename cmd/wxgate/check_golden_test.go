package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/check/*.golden from what check prints")

// TestCheckGolden: `wxgate check` on each testdata/check/NAME.toml, with
// the variables NAME.env lists (one NAME=VALUE a line) set, prints what
// NAME.golden holds, the exit code last: every problem on a line of its
// own naming the file, the line that sets the key (or the variable that
// set it) and the key, with the nearest known key for a misspelt one.
func TestCheckGolden(t *testing.T) {
	const secret = "golden-s3cret-value"
	paths, err := filepath.Glob("testdata/check/*.toml")
	if err != nil || len(paths) < 5 {
		t.Fatalf("configs: %v, %v", paths, err)
	}
	src, err := filepath.Abs("testdata/check")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".toml")
		t.Run(name, func(t *testing.T) {
			t.Setenv("WXGATE_TEST_GOLDEN_SECRET", secret)
			if env, err := os.ReadFile(filepath.Join(src, name+".env")); err == nil {
				for _, kv := range strings.Fields(string(env)) {
					k, v, _ := strings.Cut(kv, "=")
					t.Setenv(k, v)
				}
			}
			// From the file's directory, as an operator runs it: the
			// report names the file as given.
			t.Chdir(src)
			var out bytes.Buffer
			code := run([]string{"check", "--config", name + ".toml"}, &out, &out)
			got := fmt.Sprintf("%sexit %d\n", out.String(), code)
			golden := filepath.Join(src, name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("check %s.toml (-want +got):\n%s", name, diff)
			}
			if strings.Contains(got, secret) {
				t.Error("check printed the secret")
			}
			if code != 0 && !strings.Contains(got, name+".toml:") {
				t.Error("no problem names a line of the file")
			}
		})
	}
}
