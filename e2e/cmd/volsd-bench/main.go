// Command volsd-bench runs volsd's benchmarks with their baselines in one
// go and writes docs/benchmarks.md and docs/benchmarks.json (`make bench`
// runs it under scripts/with-emulators.sh after `make build`). Run alone
// it starts the emulators itself the same way. Needs root (loop devices,
// mkfs.ext4, mount).
//
//	volsd-bench                      # everything, the sizes
//	VOLSD_BENCH_QUICK=1 volsd-bench  # small sizes; writes build/bench-quick/
//	volsd-bench -parts apply,ttc -runs 3 -out /tmp/b
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/volsd/volsd/e2e/bench"
	"github.com/volsd/volsd/e2e/harness"
)

func main() {
	parts := flag.String("parts", strings.Join(bench.Parts, ","), "benchmarks to run, comma-separated: "+strings.Join(bench.Parts, ", "))
	out := flag.String("out", "", "directory for benchmarks.md and benchmarks.json (default docs/, or build/bench-quick/ in quick mode)")
	runs := flag.Int("runs", 0, "runs per figure for every benchmark (default: each benchmark's own, at least 3)")
	quick := flag.Bool("quick", os.Getenv("VOLSD_BENCH_QUICK") == "1", "small sizes (also VOLSD_BENCH_QUICK=1)")
	keep := flag.Bool("keep", false, "keep the work directory")
	ttcSizes := flag.String("ttc-sizes", "", "time-to-content part: only these content sizes, comma-separated (e.g. 2GiB; default all)")
	scaleoutLimited := flag.Bool("scaleout-limited", true, "scale-out part: also the runs under EC2's default Describe* limit")
	render := flag.String("render", "", "only render: read this benchmarks.json and write benchmarks.md beside it (or into -out)")
	noGoBench := flag.Bool("no-agent-gobench", false, "apply part: leave out the agent package's own benchmarks (the cross-check)")
	flag.Parse()
	if *render != "" {
		os.Exit(rerender(*render, *out))
	}
	os.Exit(run(*parts, *out, *runs, *quick, *keep, *ttcSizes, !*scaleoutLimited, *noGoBench))
}

// rerender writes benchmarks.md (and a re-indented benchmarks.json) from
// an earlier run's benchmarks.json, so the report's wording can change
// without measuring again.
func rerender(from, out string) int {
	b, err := os.ReadFile(from)
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 2
	}
	var res bench.Results
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintf(os.Stderr, "volsd-bench: %s: %v\n", from, err)
		return 2
	}
	if out == "" {
		out = filepath.Dir(from)
	}
	if err := bench.WriteReport(out, &res); err != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 1
	}
	fmt.Printf("wrote %s from %s\n", filepath.Join(out, "benchmarks.md"), from)
	return 0
}

func run(parts, out string, runs int, quick, keep bool, ttcSizes string, skipLimited, noGoBench bool) int {
	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 2
	}
	ddb, moto := os.Getenv("VOLSD_TEST_DYNAMODB_ENDPOINT"), os.Getenv("VOLSD_TEST_MOTO_ENDPOINT")
	if ddb == "" || moto == "" {
		return harness.ReexecWithEmulators(root, "volsd-bench")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "volsd-bench: run as root (loop devices, mkfs.ext4, mount)")
		return 2
	}
	if out == "" {
		out = filepath.Join(root, "docs")
		if quick {
			out = filepath.Join(root, "build", "bench-quick")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	work, err := os.MkdirTemp("", "volsd-e2e-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 1
	}
	// The e2e harness sweeps volsd-e2e-* directories of dead processes.
	_ = os.WriteFile(filepath.Join(work, "pid"), []byte(fmt.Sprint(os.Getpid())), 0o644)
	if !keep {
		defer os.RemoveAll(work)
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("%7.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	logf("volsd-bench: DynamoDB Local %s, moto %s, work dir %s, quick=%v", ddb, moto, work, quick)
	list := splitList(parts)
	res, err := bench.Run(ctx, bench.Options{
		Root: root, WorkDir: work, Quick: quick, Parts: list, DeployedDir: filepath.Join(root, "build", "lambda"),
		DynamoDBURL: ddb, MotoURL: moto, Runs: runs, Log: logf, TTCSizes: splitList(ttcSizes), ScaleOutSkipLimited: skipLimited, NoAgentGoBench: noGoBench,
	})
	if res == nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 2
	}
	res.Command = command(quick)
	if werr := bench.WriteReport(out, res); werr != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench: write report:", werr)
		return 1
	}
	logf("wrote %s and %s", filepath.Join(out, "benchmarks.md"), filepath.Join(out, "benchmarks.json"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-bench:", err)
		return 1
	}
	return 0
}

// command is how this report was made, for the report.
func command(quick bool) string {
	args := strings.Join(os.Args[1:], " ")
	c := "make bench"
	if quick {
		c = "VOLSD_BENCH_QUICK=1 make bench"
	}
	if args != "" {
		c = "go run ./e2e/cmd/volsd-bench " + args
	}
	return c
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var list []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			list = append(list, p)
		}
	}
	return list
}
