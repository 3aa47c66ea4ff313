// Package buildinfo holds the version and commit of volsd's programs
// (volsd, volsd-agent), set at build time by the Makefile:
//
//	go build -ldflags "-X github.com/volsd/volsd/internal/buildinfo.version=1.2.3 \
//	  -X github.com/volsd/volsd/internal/buildinfo.commit=<sha>"
//
// A plain `go build` or `go run` reports the version "devel" and the commit
// Go recorded from the checkout (vcs.revision), else "unknown".
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X (the Makefile's LDFLAGS); empty in a plain build.
var (
	version string
	commit  string
)

// Version is the release version (scripts/version.sh), "devel" when the
// build did not set one.
func Version() string {
	if version == "" {
		return "devel"
	}
	return version
}

// Commit is the git commit the program was built from.
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			return rev + "-dirty"
		}
		if rev != "" {
			return rev
		}
	}
	return "unknown"
}

// String is the one --version line of program.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", program, Version(), Commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
