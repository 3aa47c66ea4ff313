// Command volsd is the operator CLI: push files and trees to a volsd pool,
// wait for every instance to apply them, and show the pool's state. The
// logic is in internal/cli; this only wires the process to it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/volsd/volsd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{Out: os.Stdout, Err: os.Stderr, Terminal: term.IsTerminal(int(os.Stderr.Fd()))},
		os.LookupEnv, cli.ConnectAWS)
	stop()
	os.Exit(code)
}
