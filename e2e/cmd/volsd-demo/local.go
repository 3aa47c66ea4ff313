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
	"syscall"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/e2e/playground"
)

// serve is `volsd-demo serve` (make local): the local system stays up for
// the user's own content until Ctrl-C or SIGTERM.
func serve(args []string) int {
	fs := flag.NewFlagSet("volsd-demo serve", flag.ContinueOnError)
	state := fs.String("state", playground.DefaultStateDir, "state `DIR`: env and outputs files, control socket, crash record")
	pool := fs.String("pool", "local", "pool name")
	instances := fs.Int("instances", 2, "instances to launch at start")
	idle := fs.Int("idle-per-az", 2, "idle volumes per AZ (the pool's target)")
	size := fs.Int("volume-gib", 1, "size of each volume in GiB (a sparse image)")
	bins := fs.String("binaries", "", "use the programs an earlier harness build put into `DIR` instead of building")
	every := fs.Duration("reconcile-every", time.Minute, "run the reconcile schedule this often (0 = only `ctl reconcile`)")
	verbose := fs.Bool("v", false, "print the harness's own log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "volsd-demo serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	root, err := harness.RepoRoot()
	if err != nil && *bins == "" {
		fmt.Fprintln(os.Stderr, "volsd-demo serve:", err)
		return 2
	}
	ddb, moto := os.Getenv("VOLSD_TEST_DYNAMODB_ENDPOINT"), os.Getenv("VOLSD_TEST_MOTO_ENDPOINT")
	if ddb == "" || moto == "" {
		return harness.ReexecWithEmulators(root, "volsd-demo")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "volsd-demo serve: run as root (loop devices, mkfs.ext4, mount): sudo make local")
		return 2
	}
	emulators, err := playground.ParseEmulatorPIDs(os.Getenv("VOLSD_EMULATOR_PIDS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo serve:", err)
		return 2
	}
	self, _ := os.Executable()
	logW := io.Discard
	if *verbose {
		logW = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err = playground.Serve(ctx, playground.Options{
		StateDir: *state, DynamoDBURL: ddb, MotoURL: moto,
		Emulators: emulators, EmulatorLogDir: os.Getenv("VOLSD_EMULATOR_LOGDIR"),
		Root: root, Binaries: *bins, Self: self,
		Pool: *pool, Instances: *instances, IdlePerAZ: *idle, VolumeSizeGiB: *size, ReconcileEvery: *every,
		Out: os.Stdout, Log: slog.New(slog.NewTextHandler(logW, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			fmt.Fprintln(os.Stderr, "volsd-demo serve: interrupted before the system was up:", err)
		} else {
			fmt.Fprintln(os.Stderr, "volsd-demo serve:", err)
		}
		return 1
	}
	fmt.Println("volsd playground: stopped; nothing left behind")
	return 0
}

// ctl is `volsd-demo ctl COMMAND [ARG]`: one control command to the
// running playground.
func ctl(args []string) int {
	fs := flag.NewFlagSet("volsd-demo ctl", flag.ContinueOnError)
	state := fs.String("state", playground.DefaultStateDir, "state `DIR` of the playground to control")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: volsd-demo ctl [-state DIR] scale-out N | scale-in N | kill INSTANCE | snapshot | reconcile | instances")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := playground.ParseCommand(fs.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo ctl:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := playground.Ctl(ctx, *state, fs.Args(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "volsd-demo ctl:", err)
		return 1
	}
	return 0
}
