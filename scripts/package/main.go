// Command package builds the volsd-agent .deb and .rpm for amd64 and arm64
// (`make package`) from the agent programs `make agent` built. What the
// packages hold is in agent/packaging; this only wires flags to it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/volsd/volsd/agent/packaging"
)

func main() {
	version := flag.String("version", "", "package version (scripts/version.sh)")
	bin := flag.String("bin", "build/bin", "directory holding volsd-agent-linux-<arch>")
	out := flag.String("out", "build/pkg", "directory for the packages")
	flag.Parse()

	// SOURCE_DATE_EPOCH (the Makefile sets the commit time) makes the
	// packages reproducible.
	mtime := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "package: SOURCE_DATE_EPOCH %q is not a number of seconds\n", s)
			os.Exit(2)
		}
		mtime = time.Unix(sec, 0)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "package: %v\n", err)
		os.Exit(1)
	}
	for _, arch := range packaging.Arches {
		for _, format := range packaging.Formats {
			path, err := packaging.Build(packaging.Spec{
				Format: format, Arch: arch, Version: *version, MTime: mtime,
				Binary: filepath.Join(*bin, "volsd-agent-linux-"+arch),
			}, *out)
			if err != nil {
				fmt.Fprintf(os.Stderr, "package: %v\n", err)
				os.Exit(1)
			}
			fmt.Println(path)
		}
	}
}
