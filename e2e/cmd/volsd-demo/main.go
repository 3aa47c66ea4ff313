// Command volsd-demo runs volsd on this machine and tells its story: the
// real Lambda bootstraps, agents and CLI against DynamoDB Local and moto
// (behind a proxy that plays what moto lacks), with loop-device volumes.
// `make demo` runs it under scripts/with-emulators.sh; run alone it starts
// the emulators itself the same way. Needs root. Exits non-zero on any
// mismatch; cleans up (agents, mounts, loop devices, emulators) on success,
// failure and Ctrl-C. `volsd-demo serve` (make local) keeps the system up
// for the user's own content instead; `volsd-demo ctl` drives it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/e2e/story"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve":
			os.Exit(serve(os.Args[2:]))
		case "ctl":
			os.Exit(ctl(os.Args[2:]))
		}
	}
	small := flag.Bool("small", false, "tell the story at the end-to-end test's size (quick)")
	keep := flag.Bool("keep", false, "keep the work directory (images, instance trees, logs)")
	verbose := flag.Bool("v", false, "print the harness's own log")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: volsd-demo [-small] [-keep] [-v]   tell the story (make demo)\n"+
			"       volsd-demo serve [flags]          keep the system up for your own content (make local; serve -h)\n"+
			"       volsd-demo ctl COMMAND            drive a running playground (ctl -h)")
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(*small, *keep, *verbose))
}

func run(small, keep, verbose bool) int {
	ddb, moto := os.Getenv("VOLSD_TEST_DYNAMODB_ENDPOINT"), os.Getenv("VOLSD_TEST_MOTO_ENDPOINT")
	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo:", err)
		return 2
	}
	if ddb == "" || moto == "" {
		return harness.ReexecWithEmulators(root, "volsd-demo")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "volsd-demo: run as root (loop devices, mkfs.ext4, mount)")
		return 2
	}
	if err := harness.Preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	logW := io.Discard
	if verbose {
		logW = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logW, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n := story.NewNarrator(os.Stdout)
	fmt.Printf("volsd demo: DynamoDB Local %s, moto %s\n", ddb, moto)

	work, err := os.MkdirTemp("", "volsd-e2e-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo:", err)
		return 1
	}
	done := n.Step("build the Lambda bootstraps (-tags lambda.norpc, this machine's architecture), volsd-agent and volsd")
	bins, err := harness.Build(ctx, root, filepath.Join(work, "build"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo:", err)
		os.RemoveAll(work)
		return 1
	}
	done("built into %s", filepath.Join(work, "build"))

	opts := harness.Options{
		DynamoDBURL: ddb, MotoURL: moto, Binaries: bins, WorkDir: work, Pool: "demo",
		IdlePerAZ: 2, VolumeSizeGiB: 1, ReleasePolicy: "recycle",
		// Replace idle volumes as soon as they are behind a newer snapshot,
		// so the story's refresh step happens at once (docs/demo.md).
		LambdaEnv:       map[string]string{"VOLSD_REFRESH_BEHIND": "1"},
		QueueVisibility: 20 * time.Second,
		ApplyInterval:   time.Minute,
		Log:             log,
	}
	sizes := story.DemoSizes()
	if small {
		sizes = story.TestSizes()
	}
	done = n.Step("start the local stack: table, bucket, queue + DLQ, VPC with a subnet in each of 2 AZs, group with launch and terminate hooks; proxy; Runtime API servers")
	c, err := harness.Start(ctx, opts)
	cleanup := func() {
		fmt.Println("cleaning up: agents, mounts, loop devices, work directory")
		if cerr := c.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "volsd-demo: cleanup:", cerr)
		}
		if !keep {
			os.RemoveAll(work)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo: start:", err)
		saveLogs(work)
		cleanup()
		return 1
	}
	done("proxy %s; group %s; table %s", c.Proxy.URL(), c.Names.Group, c.Names.Table)

	res, err := story.Run(ctx, c, n, sizes)
	if err == nil {
		n.Summary()
		fmt.Printf("\nvolsd demo: OK — %d files (%.0f MB) pushed to every instance in %.1f s; snapshot at seq %d; a new instance caught up %d entries; head %d\n",
			res.Files, float64(res.Bytes)/1e6, res.PushDuration.Seconds(), res.SnapshotSeq, res.CaughtUp, res.Head)
		cleanup()
		return 0
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(os.Stderr, "\nvolsd-demo: interrupted")
	} else {
		fmt.Fprintf(os.Stderr, "\nvolsd-demo: FAILED: %v\n", err)
	}
	saveLogs(work)
	cleanup()
	return 1
}

// saveLogs copies the component logs out of the work directory, which
// cleanup removes.
func saveLogs(work string) {
	dst := filepath.Join(os.TempDir(), "volsd-demo-logs-"+time.Now().Format("20060102-150405"))
	src := filepath.Join(work, "logs")
	if _, err := os.Stat(src); err != nil {
		return
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err == nil {
		fmt.Fprintf(os.Stderr, "volsd-demo: logs of the Lambdas, agents and CLI kept in %s\n", dst)
	}
}
