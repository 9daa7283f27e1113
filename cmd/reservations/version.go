package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Build stamps, set by the Makefile's build target:
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=<sha> -X main.buildDate=2026-01-02T03:04:05Z"
//
// Empty when built otherwise (go run, go build, go install): buildInfo then
// falls back to what the Go toolchain records in the binary.
var (
	version   string
	commit    string
	buildDate string
)

// build is what the binary knows about its own build: printed by `reservations
// version`, logged at start and exported as reservations_build_info.
type build struct {
	// Version: -X main.version, else the main module's version as the Go
	// toolchain stamped it (a tag such as v1.2.0 for `go install ...@v1.2.0`,
	// a pseudo-version such as v0.0.0-20260102030405-abcdef123456+dirty for a
	// `go build` in a checkout), else "(devel)".
	Version string
	// Commit: -X main.commit, else vcs.revision, else "unknown".
	Commit string
	// Modified: the checkout had uncommitted changes (vcs.modified; only
	// known without ldflags).
	Modified bool
	// Date: -X main.buildDate (the build time), else vcs.time (the commit
	// time, see DateIsCommit), else "unknown".
	Date         string
	DateIsCommit bool
	GoVersion    string
}

// buildInfo returns the build of this binary.
func buildInfo() build {
	bi, _ := debug.ReadBuildInfo()
	return resolveBuild(version, commit, buildDate, bi)
}

// resolveBuild prefers the ldflags stamps and falls back to bi (nil: none).
func resolveBuild(ldVersion, ldCommit, ldDate string, bi *debug.BuildInfo) build {
	b := build{Version: ldVersion, Commit: ldCommit, Date: ldDate, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" && s.Value != "" {
					b.Date, b.DateIsCommit = s.Value, true
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// LogAttrs are the build's fields for a startup log line.
func (b build) LogAttrs() []any {
	return []any{"version", b.Version, "commit", b.Commit}
}

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version, commit and build date of this binary",
		help: `
Prints the version, the commit and the build date of this binary, and the Go
version that built it. 'make build' stamps them (-ldflags -X main.version,
main.commit, main.buildDate); a binary built otherwise reports what the Go
toolchain recorded: the module version, vcs.revision and the commit time
vcs.time. The metric reservations_build_info carries the same values.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			s := newSettings("version")
			return s, func(_ context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("version", fmt.Errorf("unexpected argument %q", args[0]))
				}
				b := buildInfo()
				commit := b.Commit
				if b.Modified {
					commit += " (with uncommitted changes)"
				}
				date := b.Date
				switch {
				case b.DateIsCommit:
					date += " (commit time; built without the Makefile's ldflags)"
				case b.Date != "unknown":
					date += " (build time)"
				}
				fmt.Fprintf(c.stdout, "reservations %s\ncommit: %s\ndate:   %s\ngo:     %s %s/%s\n",
					b.Version, commit, date, b.GoVersion, runtime.GOOS, runtime.GOARCH)
				return exitOK
			}
		},
	}
}
