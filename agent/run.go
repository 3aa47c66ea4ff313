package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/volsd/volsd/internal/buildinfo"
)

// Usage is the command line summary.
const Usage = `usage: volsd-agent COMMAND [FLAGS]
       volsd-agent COMMAND --help | --help | --version

commands:
  up                         mount the pool volume, catch up, complete the launch hook
  apply [--upto N]           apply journal entries up to N (0 = head)
        [--periodic]         (timer) skip unless applyInterval passed since the last apply
  freeze [--max-seconds S]   sync and freeze the filesystem; thawed after S seconds at the latest
  thaw                       thaw the filesystem (fine when not frozen)
  release                    stop applying, sync, unmount; report the final seq
  status                     report the watermark and the journal head

Human lines go to stderr; the last stdout line is one JSON report.
Exit codes: 0 ok, 1 retryable, 2 bad input, 3 not ready.
`

// commandSummary is each command's line in `volsd-agent COMMAND --help`.
var commandSummary = map[string]string{
	"up":      "mount the pool volume, catch up with the journal, complete the launch hook",
	"apply":   "apply journal entries up to --upto (0 = head)",
	"freeze":  "sync and freeze the filesystem; thawed after --max-seconds at the latest",
	"thaw":    "thaw the filesystem (fine when not frozen)",
	"release": "stop applying, sync, unmount; report the final seq",
	"status":  "report the watermark and the journal head",
}

// commandUsage prints cmd's synopsis and the flags it takes.
func commandUsage(w io.Writer, fl *flag.FlagSet, cmd string, flags []string) {
	fmt.Fprintf(w, "usage: volsd-agent %s", cmd)
	help := ""
	for _, name := range flags {
		f := fl.Lookup(name)
		arg, text := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		fmt.Fprintf(w, " [--%s%s]", name, arg)
		help += fmt.Sprintf("\n  --%s%s\n      %s (default %s)\n", name, arg, text, f.DefValue)
	}
	fmt.Fprintf(w, "\n\n%s.\n%s", commandSummary[cmd], help)
	fmt.Fprint(w, "\nHuman lines go to stderr; the last stdout line is one JSON report.\nExit codes: 0 ok, 1 retryable, 2 bad input, 3 not ready.\n")
}

// Connect builds the AWS clients for cfg (main's wiring).
type Connect func(ctx context.Context, cfg Config, log *slog.Logger) (Deps, error)

// Main runs one volsd-agent command line and returns its exit code. Every
// command but the hidden watchdog prints its report as the last stdout
// line, failures included.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, connect Connect) int {
	start := time.Now()
	level := slog.LevelInfo
	if lv := getenv("VOLSD_LOG_LEVEL"); lv != "" {
		_ = level.UnmarshalText([]byte(lv))
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	// Help and version are not commands: text on stdout, no report, no
	// configuration needed.
	switch cmd {
	case "-h", "-help", "--help", "help":
		if len(args) == 1 && commandSummary[args[0]] != "" {
			return Main(ctx, []string{args[0], "--help"}, stdout, stderr, getenv, connect)
		}
		fmt.Fprint(stdout, Usage)
		return ExitOK
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, buildinfo.String("volsd-agent"))
		return ExitOK
	}
	r := Report{Command: cmd}
	done := func(err error) int {
		r.Duration = time.Since(start).Round(time.Millisecond).Seconds()
		code := finish(&r, err)
		if err != nil {
			log.Error(cmd+" failed", "kind", r.ErrorKind, "err", err)
		}
		if werr := WriteReport(stdout, r); werr != nil && code == ExitOK {
			code = ExitRetryable
		}
		return code
	}

	cfg, cfgErr := LoadConfig(getenv)

	if cmd == WatchdogCommand {
		token, deadline, err := watchdogArgs(args)
		if err != nil || cfgErr != nil {
			log.Error("thaw watchdog", "err", errors.Join(err, cfgErr))
			return ExitBadInput
		}
		a := New(cfg, Deps{Logger: log})
		if err := a.Watchdog(ctx, token, deadline); err != nil {
			log.Error("thaw watchdog", "err", err)
			return ExitRetryable
		}
		return ExitOK
	}

	fl := flag.NewFlagSet("volsd-agent "+cmd, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {} // printed below: on stdout for --help, on stderr for a mistake
	upTo := fl.Int64("upto", 0, "apply up to this seq (0 = head)")
	periodic := fl.Bool("periodic", false, "skip unless applyInterval passed since the last apply")
	maxSeconds := fl.Int("max-seconds", 30, "thaw after this many seconds at the latest")
	allowed := map[string][]string{
		"up": nil, "apply": {"upto", "periodic"}, "freeze": {"max-seconds"}, "thaw": nil, "release": nil, "status": nil,
	}
	flags, known := allowed[cmd]
	if !known {
		fmt.Fprint(stderr, Usage)
		if cmd == "" {
			return done(badInput("no command given"))
		}
		return done(badInput("unknown command %q", cmd))
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, fl, cmd, flags)
			return ExitOK
		}
		commandUsage(stderr, fl, cmd, flags)
		return done(badInput("%s: %v", cmd, err))
	}
	if fl.NArg() > 0 {
		return done(badInput("%s: unexpected arguments %q", cmd, strings.Join(fl.Args(), " ")))
	}
	var bad error
	fl.Visit(func(f *flag.Flag) {
		for _, ok := range flags {
			if f.Name == ok {
				return
			}
		}
		bad = badInput("%s does not take --%s", cmd, f.Name)
	})
	if bad != nil {
		return done(bad)
	}
	if *upTo < 0 {
		return done(badInput("--upto must be >= 0 (got %d)", *upTo))
	}
	if cfgErr != nil {
		return done(cfgErr)
	}
	r.Mount = cfg.MountPath

	var deps Deps
	if cmd != "thaw" {
		var err error
		if deps, err = connect(ctx, cfg, log); err != nil {
			return done(&Error{Kind: KindOf(err), Err: fmt.Errorf("connect to AWS: %w", err)})
		}
	}
	deps.Logger = log
	a := New(cfg, deps)
	var err error
	switch cmd {
	case "up":
		err = a.Up(ctx, &r)
	case "apply":
		err = a.Apply(ctx, *upTo, *periodic, &r)
	case "freeze":
		err = a.Freeze(ctx, *maxSeconds, &r)
	case "thaw":
		err = a.Thaw(ctx, &r)
	case "release":
		err = a.Release(ctx, &r)
	case "status":
		err = a.Status(ctx, &r)
	}
	if err == nil {
		log.Info(cmd+" done", "seq", r.Seq, "head", r.Head, "applied", r.Applied, "fetched", fmtBytes(r.Bytes))
	}
	return done(err)
}
