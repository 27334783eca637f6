package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// printVersion prints the version: -ldflags "-X main.version=v1.2.3" when
// the build set it, else the module version `go install` recorded; then
// the commit and whether the tree had changes, when the build recorded
// them (a build inside a git checkout), and the Go version.
func printVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	info, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(version, info))
	return 0
}

func versionLine(ldflags string, info *debug.BuildInfo) string {
	v, commit, modified, goVersion := ldflags, "", false, ""
	if info != nil {
		goVersion = info.GoVersion
		if v == "dev" && info.Main.Version != "" {
			v = info.Main.Version // "(devel)" for a build in the checkout
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	line := "wxgate " + v
	if commit != "" {
		line += " commit " + commit
		if modified {
			line += " (modified)"
		}
	}
	if goVersion != "" {
		line += " " + goVersion
	}
	return line
}
