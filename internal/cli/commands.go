package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/spf13/cobra"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/buildinfo"
	"github.com/volsd/volsd/internal/doctor"
	"github.com/volsd/volsd/internal/store"
)

// Exit codes of the volsd CLI.
const (
	ExitOK      = 0 // done (and, with --wait, every running instance caught up)
	ExitError   = 1 // an operation failed (AWS, I/O)
	ExitUsage   = 2 // bad arguments, configuration or input (hostile path, symlink in a tree)
	ExitFailed  = 3 // --wait: the request was rejected, or an instance reported an error; doctor: problems found
	ExitTimeout = 4 // --wait: time ran out (request not processed, or instances lagging)
)

// Clients are what the commands talk to.
type Clients struct {
	S3    ObjectStore
	SQS   Queue
	State State
	// Doctor are the read-only clients of volsd doctor.
	Doctor doctor.Clients
}

// Connector builds the clients for a configuration.
type Connector func(ctx context.Context, cfg Config) (Clients, error)

// ConnectAWS builds SDK clients from the default credential chain; the
// region comes from cfg.Region when set; endpoints only from the SDK's
// standard variables (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>).
func ConnectAWS(ctx context.Context, cfg Config) (Clients, error) {
	// One retryer for every client (awserr.NewRetryer; docs/retries.md).
	opts := []func(*config.LoadOptions) error{config.WithRetryer(awserr.NewRetryer)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	st := store.New(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	return Clients{
		S3:     s3.NewFromConfig(awsCfg),
		SQS:    sqs.NewFromConfig(awsCfg),
		State:  st,
		Doctor: DoctorClients(awsCfg, st, cfg.Pool),
	}, nil
}

// IO is where the CLI writes; Terminal says Err is a terminal (progress).
type IO struct {
	Out, Err io.Writer
	Terminal bool
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// Main runs the volsd CLI with args (without the program name) and returns
// its exit code.
func Main(ctx context.Context, args []string, stdio IO, lookup func(string) (string, bool), connect Connector) int {
	root := NewCommand(stdio, lookup, connect)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stdio.Err, "volsd: %v\n", err)
	var we *WaitError
	var ue usageError
	switch {
	case errors.As(err, &we) && we.W.Outcome == WaitTimeout:
		return ExitTimeout
	case errors.As(err, &we), errors.Is(err, ErrProblems):
		return ExitFailed
	case errors.As(err, &ue), errors.Is(err, ErrConfig), errors.Is(err, ErrInput):
		return ExitUsage
	default:
		return ExitError
	}
}

// options are the persistent flags.
type options struct {
	flags   Config
	outputs string
	stack   string
	json    bool
}

func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != n {
			return usageError{fmt.Errorf("%s takes %s (got %d arguments)", cmd.Name(), names, len(a))}
		}
		return nil
	}
}

// NewCommand returns the volsd command tree.
func NewCommand(stdio IO, lookup func(string) (string, bool), connect Connector) *cobra.Command {
	var o options
	root := &cobra.Command{
		Use:   "volsd",
		Short: "Push content to a volsd pool and watch it arrive on every instance",
		Long: `volsd pushes files and trees to the EBS volumes of a volsd pool: content goes to the
S3 origin (content-addressed, uploaded only when missing), a request to the push queue,
and every running instance applies it in journal order. --wait follows it to the end.

Configuration: flags, else VOLSD_POOL, VOLSD_TABLE, VOLSD_BUCKET, VOLSD_QUEUE_URL and
AWS_REGION, else the stack outputs file of ` + "`cdk deploy --outputs-file`" + ` (--outputs or
VOLSD_OUTPUTS; --stack or VOLSD_STACK picks one of several stacks). AWS endpoints come
from the SDK's standard variables (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, …).

Exit codes: 0 done; 1 an operation failed; 2 bad arguments, configuration or input;
3 (--wait) the request was rejected or an instance reported an error, (doctor) problems
found; 4 (--wait) time ran out.

Shell completion: volsd completion bash|zsh|fish|powershell --help.`,
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate(buildinfo.String("volsd") + "\n")
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&o.flags.Pool, "pool", "", "pool name ("+EnvPool+")")
	pf.StringVar(&o.flags.Table, "table", "", "DynamoDB table ("+EnvTable+")")
	pf.StringVar(&o.flags.Bucket, "bucket", "", "S3 origin bucket ("+EnvBucket+")")
	pf.StringVar(&o.flags.QueueURL, "queue-url", "", "SQS push queue URL ("+EnvQueueURL+")")
	pf.StringVar(&o.flags.Region, "region", "", "AWS region ("+EnvRegion+")")
	pf.StringVar(&o.outputs, "outputs", "", "stack outputs `FILE` written by cdk deploy --outputs-file ("+EnvOutputs+")")
	pf.StringVar(&o.stack, "stack", "", "stack to read from the outputs file when it holds several ("+EnvStack+")")
	pf.BoolVar(&o.json, "json", false, "print JSON instead of tables")

	// app resolves the configuration, checks what the command needs, and
	// connects.
	app := func(cmd *cobra.Command, need Need) (*App, error) {
		cfg, err := Resolve(o.flags, o.outputs, o.stack, lookup)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		if err := cfg.Check(need); err != nil {
			return nil, err
		}
		c, err := connect(cmd.Context(), cfg)
		if err != nil {
			return nil, err
		}
		return &App{Cfg: cfg, S3: c.S3, SQS: c.SQS, State: c.State, Err: stdio.Err, Progress: stdio.Terminal && !o.json}, nil
	}
	emit := func(v any, text func(io.Writer) error) error {
		if o.json {
			enc := json.NewEncoder(stdio.Out)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		return text(stdio.Out)
	}
	// afterSend prints what was sent and, with --wait, waits.
	afterSend := func(cmd *cobra.Command, a *App, s Sent, wait bool, timeout time.Duration) error {
		if !wait {
			return emit(s, func(w io.Writer) error { RenderSent(w, s); return nil })
		}
		if !o.json {
			RenderSent(stdio.Out, s)
		}
		wt, err := a.Wait(cmd.Context(), s.RequestID, s.SentAt, timeout)
		var we *WaitError
		if err != nil && !errors.As(err, &we) {
			return err
		}
		if perr := emit(struct {
			Sent Sent   `json:"sent"`
			Wait Waited `json:"wait"`
		}{s, wt}, func(w io.Writer) error { return RenderWaited(w, wt, time.Now()) }); perr != nil {
			return perr
		}
		return err
	}

	var wait, dryRun bool
	var timeout time.Duration
	var partMiB int64
	guard := DeleteGuard{Max: DefaultMaxDelete, Percent: DefaultMaxDeletePercent}
	var copyLinks bool
	push := &cobra.Command{
		Use:     "push LOCAL DEST",
		Aliases: []string{"sync"},
		Short:   "Put a file, or sync a directory tree, to DEST on every instance",
		Long: `push uploads LOCAL to the origin and asks the pool to apply it at DEST.
A file becomes a put (DEST ending in / means "into this directory"); a directory becomes
a sync of that tree (files at DEST that are not in LOCAL are deleted; "/" or "." is the
root). Only blobs the previous sync of DEST does not hold are uploaded (those under
256 KiB at once, larger ones when the origin lacks them); a second push of the same tree
uploads nothing. A sync carries files (content, permission bits, mtime), directories (empty ones
too, with their modes) and symlinks whose relative target stays inside the tree; an
absolute or escaping symlink is refused before anything is uploaded, unless --copy-links
pushes what every link points to instead (as rsync -L). Special files are refused.

The root is a target only when written as "/" (empty, ".", "./", "//" are refused).
--dry-run prints what the push would add, change and delete at DEST, and sends nothing.
A sync that would delete more than --max-delete files, or more than --max-delete-percent
of the files at DEST (once more than 10 would go), is refused unless --allow-delete.`,
		Args: args(2, "LOCAL and DEST"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if err := guard.Check(); err != nil {
				return err
			}
			// The pool and table: the deletion guard and --dry-run read
			// the journal, --wait the instances.
			a, err := app(cmd, NeedBucket|NeedQueue|NeedPool|NeedTable)
			if err != nil {
				return err
			}
			a.PartSize = partMiB << 20
			a.DryRun, a.Guard = dryRun, &guard
			a.CopyLinks = copyLinks
			s, err := a.Push(cmd.Context(), argv[0], argv[1])
			if err != nil {
				return err
			}
			if s.DryRun {
				return emit(s, func(w io.Writer) error { RenderSent(w, s); return nil })
			}
			return afterSend(cmd, a, s, wait, timeout)
		},
	}
	push.Flags().BoolVar(&wait, "wait", false, "wait until every running instance has applied the request")
	push.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long --wait waits")
	push.Flags().BoolVar(&dryRun, "dry-run", false, "print what the push would add, change and delete at DEST; upload and send nothing")
	push.Flags().BoolVar(&guard.Allow, "allow-delete", false, "let a sync delete more than the deletion guard allows")
	push.Flags().IntVar(&guard.Max, "max-delete", DefaultMaxDelete, "refuse a sync deleting more than this many files (without --allow-delete)")
	push.Flags().IntVar(&guard.Percent, "max-delete-percent", DefaultMaxDeletePercent, "refuse a sync deleting more than this percentage of the files at DEST, once more than 10 would go (without --allow-delete)")
	push.Flags().BoolVarP(&copyLinks, "copy-links", "L", false, "follow symlinks: push the file or directory each points to instead of the link (rsync -L)")
	push.Flags().Int64Var(&partMiB, "part-size", DefaultPartSize>>20, "upload files of at least this many MiB in parts of this size (min 5)")

	var dwait bool
	var dtimeout time.Duration
	del := &cobra.Command{
		Use:   "delete DEST",
		Short: "Delete a file or a tree at DEST on every instance",
		Args:  args(1, "DEST"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			need := NeedQueue
			if dwait {
				need |= NeedPool | NeedTable
			}
			a, err := app(cmd, need)
			if err != nil {
				return err
			}
			s, err := a.Delete(cmd.Context(), argv[0])
			if err != nil {
				return err
			}
			return afterSend(cmd, a, s, dwait, dtimeout)
		},
	}
	del.Flags().BoolVar(&dwait, "wait", false, "wait until every running instance has applied the request")
	del.Flags().DurationVar(&dtimeout, "timeout", 10*time.Minute, "how long --wait waits")

	var rejected int
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the pool: volumes per zone, journal head, last snapshot, instances and their lag, rejected requests",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := app(cmd, NeedPool|NeedTable)
			if err != nil {
				return err
			}
			st, err := a.Status(cmd.Context(), rejected)
			if err != nil {
				return err
			}
			return emit(st, func(w io.Writer) error { return RenderStatus(w, st, time.Now()) })
		},
	}
	status.Flags().IntVar(&rejected, "rejected", 10, "show the newest N rejected requests")

	volumes := &cobra.Command{
		Use:   "volumes",
		Short: "List the pool's volumes with their state and lag",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := app(cmd, NeedPool|NeedTable)
			if err != nil {
				return err
			}
			vols, err := a.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			return emit(vols, func(w io.Writer) error { return RenderVolumes(w, vols, time.Now()) })
		},
	}

	var last int64
	journal := &cobra.Command{
		Use:   "journal",
		Short: "List the last journal entries",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := app(cmd, NeedPool|NeedTable)
			if err != nil {
				return err
			}
			es, err := a.Journal(cmd.Context(), last)
			if err != nil {
				return err
			}
			return emit(es, func(w io.Writer) error { return RenderJournal(w, es, time.Now()) })
		},
	}
	journal.Flags().Int64Var(&last, "last", 20, "how many entries (0 = all)")

	repair := &cobra.Command{
		Use:   "repair LOCAL...",
		Short: "Re-upload the right bytes of blobs from local copies (the fix for a stalled pool)",
		Long: `repair hashes every regular file of each LOCAL (a file or a tree) and puts it over
blobs/<its sha256> in the origin with its SHA-256 checksum, whatever is there, then verifies
it. When volsd status shows the pool STALLED at an entry whose blob is missing or holds other
bytes, repair it from a local copy of that file; the agents retry the entry by themselves
(backoff up to 15 minutes) or at the next push, and new instances enter service again.`,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) == 0 {
				return usageError{fmt.Errorf("repair takes one or more LOCAL files or trees")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, argv []string) error {
			a, err := app(cmd, NeedBucket)
			if err != nil {
				return err
			}
			rs, err := a.Repair(cmd.Context(), argv)
			if err != nil {
				return err
			}
			return emit(rs, func(w io.Writer) error { RenderRepaired(w, rs); return nil })
		},
	}

	doc := &cobra.Command{
		Use:   "doctor",
		Short: "Check the deployed pool and name each problem with its fix",
		Long: `doctor checks a deployed pool with your credentials, reading only: the group's
volsd:pool tag (PropagateAtLaunch, on every instance in service), volsd's two lifecycle
hooks (names, transitions, default results, heartbeat timeouts; other hooks are left to
their owners), the pool's EventBridge rules (enabled), every instance in service online
in SSM, the instance roles allowing every call of volsd-agent and the SSM agent (IAM's
policy simulator, iam:SimulatePrincipalPolicy), the SSM documents, both dead-letter
queues empty, and the newest snapshot no older than the SnapshotAge alarm allows.
It reads the group, queues, rules and document prefix from the stack outputs
(--outputs: AutoScalingGroupName, DeadLetterQueueUrl, EventDeadLetterQueueUrl, Rules,
DocumentPrefix) or the flags. Exit code 3 when it finds a problem.`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := Resolve(o.flags, o.outputs, o.stack, lookup)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrConfig, err)
			}
			if err := cfg.Check(NeedPool | NeedTable | NeedBucket | NeedGroup); err != nil {
				return err
			}
			c, err := connect(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			rep, err := Doctor(cmd.Context(), cfg, c.Doctor)
			if err != nil {
				return err
			}
			if err := emit(rep, func(w io.Writer) error { RenderDoctor(w, rep); return nil }); err != nil {
				return err
			}
			if n := rep.Problems(); n > 0 {
				return fmt.Errorf("doctor: %w: %d", ErrProblems, n)
			}
			return nil
		},
	}
	df := doc.Flags()
	df.StringVar(&o.flags.Group, "asg", "", "the pool's Auto Scaling group (output AutoScalingGroupName)")
	df.StringVar(&o.flags.DeadLetterQueueURL, "dlq-url", "", "the push dead-letter queue URL (output DeadLetterQueueUrl)")
	df.StringVar(&o.flags.EventDeadLetterQueueURL, "event-dlq-url", "", "the event dead-letter queue URL (output EventDeadLetterQueueUrl)")
	df.StringVar(&o.flags.DocumentPrefix, "document-prefix", "", "the SSM document prefix (output DocumentPrefix; default volsd-)")
	df.StringVar(&o.flags.Rules, "rules", "", "the pool's EventBridge rules as ID=name,… (output Rules)")

	root.AddCommand(push, del, status, volumes, journal, repair, doc)
	return root
}
