// Package pool is volsd's control plane for pool volumes (docs/design.md §3
// "Launch", "Terminate", "Reconcile"): the lifecycle Lambda gives every new
// instance of the group one volume in its zone and releases it when the
// instance terminates; the reconcile Lambda keeps each zone's idle pool at
// its target, fresh, and consistent with EC2.
//
// Every step is a conditional write on the volume record (state and rev)
// made before the EC2 call it guards, so handlers may run twice, at once, or
// be cut off at any line: whoever loses a write re-reads and decides again,
// and reconcile finishes what a dead handler left.
package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// EC2 is the part of the EC2 API the control plane calls.
type EC2 interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, optFns ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, optFns ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	ModifyVolume(ctx context.Context, in *ec2.ModifyVolumeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyVolumeOutput, error)
	DescribeVolumesModifications(ctx context.Context, in *ec2.DescribeVolumesModificationsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesModificationsOutput, error)
}

// AutoScaling is the part of the Auto Scaling API the control plane calls.
type AutoScaling interface {
	DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
}

// SSM is the part of the SSM API terminate uses to ask the agent to release
// its volume.
type SSM interface {
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
}

// Timing holds the control plane's waits and bounds. Tests shrink them and
// may replace Sleep and Now.
type Timing struct {
	// Sleep waits d or until ctx ends (awserr.Sleep).
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock compared with record and EC2 times (time.Now).
	Now func() time.Time
	// API retries one throttled or failed AWS/DynamoDB call.
	API awserr.Backoff
	// Throttled paces an EC2 read (Describe*) the account's request limit
	// refused (1 s × 2, at most 20 s, jittered), with no bound on the
	// tries: the read waits for the bucket until the invocation's deadline
	// instead of failing the launch after API's tries. In a mass scale-out
	// EC2's Describe bucket (100, refilled 20/s) stays empty for minutes;
	// failing then only makes Lambda retry the whole launch later.
	Throttled awserr.Backoff
	// Poll paces waits for EC2 state changes (1 s × 1.8).
	Poll awserr.Backoff
	// AttachPoll paces the launch's wait for its attachment (10 s × 2, at
	// most 30 s, jittered: the first look 5–10 s after AttachVolume): an
	// EBS attachment takes seconds, and 500 launches at once must not
	// crowd EC2's Describe limit. Nothing on the boot path waits for this
	// look — the agent learns of the attachment from its device — so it
	// looks once, when the attachment is most likely done, rather than
	// early and often.
	AttachPoll awserr.Backoff
	// InstanceVisible is how long a launch waits for a new instance to show
	// in DescribeInstances (eventual consistency) before taking it as gone.
	InstanceVisible time.Duration
	// AttachStuck is how long an attachment may stay "attaching" before it
	// is detached and tried again; AttachTries bounds the tries.
	AttachStuck time.Duration
	AttachTries int
	// DetachWait bounds the wait for a detach (forced after half of it).
	DetachWait time.Duration
	// CreateWait bounds reconcile's wait for new volumes to become available.
	CreateWait time.Duration
	// ReleaseCommand bounds the best-effort volsd-Release on terminate.
	ReleaseCommand time.Duration
	// DeadlineMargin is left before the Lambda deadline.
	DeadlineMargin time.Duration
	// StuckAfter: a record in claimed/attaching/releasing not updated for
	// this long belongs to a handler that died; reconcile heals it.
	StuckAfter time.Duration
	// GoneGrace: a record this fresh is not taken as gone because EC2 does
	// not show it or its instance yet (eventual consistency).
	GoneGrace time.Duration
	// OrphanGrace: a pool-tagged volume unknown to the table is adopted or
	// deleted only once it is this old.
	OrphanGrace time.Duration
	// InstanceRetention: records of gone instances are dropped after this.
	InstanceRetention time.Duration
	// MaxActions bounds the EC2 mutations of one reconcile run.
	MaxActions int
}

// DefaultTiming is the production timing.
func DefaultTiming() Timing {
	return Timing{
		Sleep:             awserr.Sleep,
		Now:               time.Now,
		API:               awserr.DefaultBackoff,
		Poll:              awserr.Backoff{Initial: time.Second, Factor: 1.8, Max: 10 * time.Second},
		Throttled:         awserr.Backoff{Initial: time.Second, Factor: 2, Max: 20 * time.Second},
		AttachPoll:        awserr.Backoff{Initial: 10 * time.Second, Factor: 2, Max: 30 * time.Second},
		InstanceVisible:   30 * time.Second,
		AttachStuck:       90 * time.Second,
		AttachTries:       3,
		DetachWait:        2 * time.Minute,
		CreateWait:        2 * time.Minute,
		ReleaseCommand:    20 * time.Second,
		DeadlineMargin:    10 * time.Second,
		StuckAfter:        10 * time.Minute,
		GoneGrace:         2 * time.Minute,
		OrphanGrace:       15 * time.Minute,
		InstanceRetention: 2 * time.Hour,
		MaxActions:        60,
	}
}

// Deps are the clients and outputs a Pool uses; mains build them once.
type Deps struct {
	Store       *store.Store
	EC2         EC2
	AutoScaling AutoScaling
	SSM         SSM // terminate's volsd-Release; nil skips it
	Log         *slog.Logger
	Metrics     *metrics.Emitter
	Timing      *Timing // nil = DefaultTiming()
}

// Pool runs launch, terminate and reconcile for one pool.
type Pool struct {
	cfg     Config
	store   *store.Store
	ec2     EC2
	asg     AutoScaling
	ssm     SSM
	log     *slog.Logger
	metrics *metrics.Emitter
	t       Timing
}

// New returns a Pool.
func New(cfg Config, d Deps) *Pool {
	t := DefaultTiming()
	if d.Timing != nil {
		t = *d.Timing
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Pool{cfg: cfg, store: d.Store, ec2: d.EC2, asg: d.AutoScaling, ssm: d.SSM,
		log: d.Log.With("pool", cfg.Pool), metrics: d.Metrics, t: t}
}

// errUnrecoverable marks failures that no retry can mend: the launch is
// abandoned.
var errUnrecoverable = errors.New("unrecoverable")

func unrecoverable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUnrecoverable, fmt.Sprintf(format, args...))
}

// retry calls fn until it succeeds or fails with an error that is not
// retryable, with the API backoff on the injectable clock.
func (p *Pool) retry(ctx context.Context, fn func(context.Context) error) error {
	b := p.t.API
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil || !awserr.IsRetryable(err) || b.Attempts > 0 && n+1 >= b.Attempts {
			return err
		}
		if serr := p.t.Sleep(ctx, b.Delay(n)); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// read calls an EC2 read (Describe*) like retry, except that a throttled
// call waits on the Throttled backoff, without a bound on the tries unless
// Throttled sets one: until the read gets through or ctx (the invocation's
// deadline) ends. Other retryable failures keep the API backoff and its
// bound.
func (p *Pool) read(ctx context.Context, fn func(context.Context) error) error {
	return awserr.RetryThrottled(ctx, p.t.API, p.t.Throttled, p.t.Sleep, fn)
}

// withMargin returns ctx ending DeadlineMargin before its deadline
// (lambdamain.WithDeadlineMargin).
func (p *Pool) withMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	return lambdamain.WithDeadlineMargin(ctx, p.t.DeadlineMargin)
}

// clientToken is the EC2 idempotency token of the attempt-th on-demand
// volume for an instance: the same on every retry of the same launch.
func clientToken(pool, instanceID string, attempt int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", pool, instanceID, attempt))
	return "volsd-" + hex.EncodeToString(sum[:16])
}

func (p *Pool) put(name string, value float64, unit metrics.Unit, az string) {
	dims := map[string]string{"Pool": p.cfg.Pool}
	if az != "" {
		dims["AZ"] = az
	}
	p.metrics.Put(name, value, unit, dims)
}
