// Package snapshot takes consistent scheduled snapshots of a pool's content,
// keeps their records, applies retention and compacts the journal
// (docs/design.md §3 "Snapshot").
//
// Who calls what:
//
//   - functions/snapshot (EventBridge schedule) calls (*Runner).Handle, which
//     runs, in order: SyncRecords (records pending → completed/error from
//     DescribeSnapshots, adopts pool snapshots without a record), Take
//     (freeze one in-service volume through volsd-Freeze, CreateSnapshot,
//     volsd-Thaw), Retain (keep the newest K completed, delete older ones),
//     Compact (fold entries into the base tree, then let journal entries at
//     or below the floor expire), Reclaim (the origin's mark-and-sweep,
//     internal/reclaim; with WithOrigin) and emits SnapshotAgeSeconds.
//   - reconcile (internal/pool) reads the completed records with
//     store.ListSnapshots and picks its base with Newest, the same order
//     retention keeps by; it may call Compact too (it is fenced, so
//     concurrent runs are safe).
//
// Every step is idempotent and may be cut off at any line: a snapshot
// without a record is adopted on the next run, a freeze is always followed
// by a thaw (and the agent thaws by itself after maxSeconds), retention and
// compaction only act on what they re-read.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/reclaim"
	"github.com/volsd/volsd/internal/store"
)

// EC2 is the part of the EC2 API the snapshot Lambda uses.
type EC2 interface {
	CreateSnapshot(ctx context.Context, in *ec2.CreateSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// SSM is the part of the SSM API the snapshot Lambda uses.
type SSM interface {
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
}

// AutoScaling is the part of the Auto Scaling API the snapshot Lambda uses
// (to snapshot only volumes of instances that are InService).
type AutoScaling interface {
	DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
}

// LeaseName is the per-pool lease a run holds while it freezes, snapshots
// and thaws, so two runs never freeze at once.
const LeaseName = "snapshot"

// Config is what a Runner needs to know; main fills it from the environment.
type Config struct {
	Pool  string // VOLSD_POOL
	Group string // VOLSD_ASG
	// Keep is how many completed snapshots retention keeps (VOLSD_SNAPSHOT_KEEP).
	Keep int
	// FreezeSeconds is the agent's automatic thaw bound, sent as the
	// maxSeconds parameter of volsd-Freeze (VOLSD_FREEZE_SECONDS).
	FreezeSeconds int
	// DocFreeze and DocThaw are the SSM document names (VOLSD_DOC_FREEZE/THAW).
	DocFreeze, DocThaw string
	// KMSKeyID is the pool's EBS key (VOLSD_KMS_KEY_ID). CreateSnapshot
	// inherits the volume's key; a completed snapshot that is not
	// encrypted with this key is logged as a warning.
	KMSKeyID string
	// CompactGrace is how long entries below the floor stay before TTL
	// removes them (VOLSD_COMPACT_GRACE): time to notice a wrong floor.
	CompactGrace time.Duration
	// Bucket is the S3 origin (VOLSD_BUCKET) and ReclaimGrace how long an
	// unreferenced object stays before reclaim deletes it
	// (VOLSD_RECLAIM_GRACE; 0: reclaim off). Reclaim runs after compaction.
	Bucket       string
	ReclaimGrace time.Duration

	// PollInterval is the first wait between GetCommandInvocation polls
	// (default 500ms; it doubles up to 2s).
	PollInterval time.Duration
	// ThawTimeout bounds sending (and confirming) volsd-Thaw on a fresh
	// context, also when the run's context is gone (default 5s).
	ThawTimeout time.Duration
	// DeadlineMargin is kept free before the Lambda's deadline (default 10s).
	DeadlineMargin time.Duration
	// RecordGrace is how long a pending record whose snapshot DescribeSnapshots
	// does not list yet is kept (eventual consistency; default 10m).
	RecordGrace time.Duration
}

func (c *Config) defaults() error {
	var errs []error
	if c.Pool == "" {
		errs = append(errs, errors.New("pool is empty"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("auto scaling group is empty"))
	}
	if c.Keep < 1 {
		errs = append(errs, fmt.Errorf("keep must be at least 1 (got %d)", c.Keep))
	}
	if c.FreezeSeconds < 5 {
		errs = append(errs, fmt.Errorf("freeze seconds must be at least 5 (got %d)", c.FreezeSeconds))
	}
	if c.DocFreeze == "" || c.DocThaw == "" {
		errs = append(errs, errors.New("freeze and thaw document names are required"))
	}
	if c.CompactGrace < 0 {
		errs = append(errs, fmt.Errorf("compact grace must not be negative (got %s)", c.CompactGrace))
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.ThawTimeout <= 0 {
		c.ThawTimeout = 5 * time.Second
	}
	if c.DeadlineMargin <= 0 {
		c.DeadlineMargin = 10 * time.Second
	}
	if c.RecordGrace <= 0 {
		c.RecordGrace = 10 * time.Minute
	}
	return errors.Join(errs...)
}

// Runner runs the snapshot Lambda's steps for one pool.
type Runner struct {
	cfg     Config
	st      *store.Store
	ec2     EC2
	ssm     SSM
	asg     AutoScaling
	log     *slog.Logger
	metrics *metrics.Emitter
	now     func() time.Time
	reclaim *reclaim.Reclaimer
}

// WithOrigin makes every run reclaim the origin through s3c after
// compaction (when cfg.ReclaimGrace is above 0); it returns r.
func (r *Runner) WithOrigin(s3c reclaim.S3) *Runner {
	if r.cfg.ReclaimGrace > 0 {
		r.reclaim = reclaim.New(reclaim.Config{Pool: r.cfg.Pool, Bucket: r.cfg.Bucket, Grace: r.cfg.ReclaimGrace}, r.st, s3c, r.log, r.metrics)
	}
	return r
}

// New returns a Runner; it checks cfg and fills in defaults.
func New(cfg Config, st *store.Store, ec2c EC2, ssmc SSM, asg AutoScaling, log *slog.Logger, m *metrics.Emitter) (*Runner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("snapshot config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		cfg: cfg, st: st, ec2: ec2c, ssm: ssmc, asg: asg,
		log:     log.With("pool", cfg.Pool),
		metrics: m,
		now:     func() time.Time { return time.Now().UTC() },
	}, nil
}

// Result says what one run did.
type Result struct {
	Sync    SyncResult
	Take    TakeResult
	Retain  RetainResult
	Compact CompactResult
	Reclaim reclaim.Result
	// AgeSeconds is the SnapshotAgeSeconds value emitted (-1: none).
	AgeSeconds float64
}

// Run does one scheduled run: sync records, take a snapshot, retention,
// compaction, metric. A failing step does not stop the later ones (each
// re-reads what it needs); the errors are joined. ctx is cut
// DeadlineMargin before its deadline (lambdamain.WithDeadlineMargin).
func (r *Runner) Run(ctx context.Context) (Result, error) {
	res := Result{AgeSeconds: -1}
	ctx, cancel := lambdamain.WithDeadlineMargin(ctx, r.cfg.DeadlineMargin)
	defer cancel()
	var errs []error
	step := func(name string, err error) {
		if err != nil {
			r.log.Error("snapshot step failed", "step", name, "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	var err error
	res.Sync, err = r.SyncRecords(ctx)
	step("sync", err)
	res.Take, err = r.Take(ctx)
	step("take", err)
	if res.Take.SnapshotID != "" {
		// Record the new snapshot's state at once (moto and small
		// snapshots complete quickly); a failure here is retried next run.
		_, err = r.SyncRecords(ctx)
		step("sync", err)
	}
	res.Retain, err = r.Retain(ctx)
	step("retain", err)
	res.Compact, err = Compact(ctx, r.st, r.cfg.Pool, r.cfg.CompactGrace)
	if errors.Is(err, store.ErrConflict) {
		r.log.Info("another run is compacting the journal; skipped", "error", err)
		err = nil
	}
	step("compact", err)
	if err == nil && res.Compact.Floor >= 0 {
		r.log.Info("journal compacted", "floor", res.Compact.Floor, "floorHeldBy", res.Compact.Reason,
			"marked", res.Compact.Marked, "unmarked", res.Compact.Unmarked)
	}
	if r.reclaim != nil {
		res.Reclaim, err = r.reclaim.Run(ctx)
		step("reclaim", err)
	}
	res.AgeSeconds, err = r.emitAge(ctx)
	step("metric", err)
	return res, errors.Join(errs...)
}

// newOwner returns a random lease owner for one run.
func newOwner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "run-" + hex.EncodeToString(b[:])
}
