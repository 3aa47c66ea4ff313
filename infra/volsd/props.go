// Package volsd is the reusable CDK construct that deploys the volsd backend
// for one pool: the DynamoDB table, the S3 origin, the push queue and its
// dead-letter queues, the five Lambdas, their EventBridge rules and schedules,
// the lifecycle hooks on the Auto Scaling group, the SSM Command documents, the
// IAM policies (least privilege, docs/design.md §4), alarms and a dashboard.
//
//	pool := volsd.NewPool(stack, "Pool", &volsd.PoolProps{
//		PoolName:             "web",
//		AutoScalingGroupName: "web-asg",
//	})
//	pool.GrantAgent(instanceRole)
//	pool.AddOutputs()
package volsd

import (
	"fmt"
	"regexp"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/reclaim"
	"github.com/volsd/volsd/internal/snapshot"
)

// NoReclaim as PoolProps.ReclaimGrace turns the origin's reclaim off.
const NoReclaim time.Duration = -1

// Release policies for volumes of terminated instances (VOLSD_RELEASE_POLICY).
const (
	ReleaseRecycle = pool.PolicyRecycle // return the volume to the idle pool with its watermark
	ReleaseDelete  = pool.PolicyDelete  // delete the volume
)

// TagPool is the tag on every volume, snapshot and instance of a pool
// (events.TagPool, for users of the construct).
const TagPool = events.TagPool

// Lifecycle hook names on the group. The agent completes the launch hook by
// name; the rule and the handler take only these two.
const (
	LaunchHookName    = events.LaunchHookName
	TerminateHookName = events.TerminateHookName
)

// Function names of the five Lambdas; each one's code is <LambdaAssetDir>/<name>/bootstrap.
var FunctionNames = []string{"lifecycle", "reconcile", "snapshot", "push", "report"}

// PoolProps configure one volsd pool. Only PoolName and one of
// AutoScalingGroupName / AutoScalingGroup are required.
type PoolProps struct {
	// PoolName names the pool: letters, digits, '-', '_'; at most 64.
	PoolName string
	// AutoScalingGroupName is the name of the group whose instances get
	// volumes. The group's instances must carry the tag volsd:pool=<PoolName>
	// (PropagateAtLaunch): SSM commands and EC2 attach are scoped by it.
	AutoScalingGroupName string
	// AutoScalingGroup may be given instead of AutoScalingGroupName.
	AutoScalingGroup awsautoscaling.IAutoScalingGroup

	// IdlePerAZ is the number of idle synced volumes kept per AZ. Default 1.
	IdlePerAZ *int
	// AvailabilityZones limits the pool to these AZs; empty = the group's AZs.
	AvailabilityZones []string
	// VolumeSizeGiB is the size of new volumes. Default 10.
	VolumeSizeGiB int
	// VolumeType is gp3, gp2, io1 or io2. Default gp3.
	VolumeType string
	// VolumeIops and VolumeThroughput: 0 = AWS default.
	VolumeIops       int
	VolumeThroughput int
	// VolumeInitRate is VolumeInitializationRate in MiB/s for volumes created
	// from snapshots; 0 = off.
	VolumeInitRate int
	// SourceSnapshotID is the base snapshot while the pool has none of its own.
	SourceSnapshotID string
	// KmsKey encrypts the pool's EBS volumes and snapshots; nil = the
	// account's default EBS key. The Lambdas get only the grants EBS needs.
	// When the account's default EBS key is a customer managed key, give it
	// here: the Lambdas have no grants on keys they are not told of.
	KmsKey awskms.IKey
	// ReleasePolicy is ReleaseRecycle (default) or ReleaseDelete.
	ReleasePolicy string

	// Filesystem (default ext4) and MountPath (default /srv/volsd) go into
	// the agent's configuration (AgentConfig).
	Filesystem string
	MountPath  string

	// ReconcileInterval is how often reconcile runs. Default 5 minutes.
	ReconcileInterval awscdk.Duration
	// SnapshotInterval is how often a snapshot is taken. Default 6 hours.
	SnapshotInterval awscdk.Duration
	// SnapshotKeep is how many completed snapshots are kept. Default 3.
	SnapshotKeep int
	// FreezeSeconds bounds how long the agent keeps the filesystem frozen. Default 30.
	FreezeSeconds int
	// AutoGrowFreePercent turns auto-grow on: a volume whose agent
	// reports less than this share of its filesystem free grows by
	// AutoGrowStepGiB (default 10), up to AutoGrowMaxGiB (default: the
	// volume type's maximum). 0 (default) = off. FillAlarmPercent (default
	// 90): VolumeFullAlarm fires for a volume at least this full that will
	// not grow (VOLSD_AUTOGROW_*, VOLSD_FILL_ALARM_PERCENT; reconcile).
	AutoGrowFreePercent int
	AutoGrowStepGiB     int
	AutoGrowMaxGiB      int
	FillAlarmPercent    int
	// ReclaimGrace is how long an origin object (blob or manifest) stays
	// after nothing references it any more, and after its upload, before
	// the snapshot Lambda's reclaim deletes it (VOLSD_RECLAIM_GRACE).
	// Default 7 days; at least 5 days (the push queue's retention plus a
	// day); NoReclaim (-1) turns reclaim off.
	ReclaimGrace time.Duration

	// LaunchHeartbeatTimeout is the launch hook's heartbeat timeout: how long
	// an instance may take to get its volume and catch up (the agent sends
	// heartbeats while it applies). Default 15 minutes.
	LaunchHeartbeatTimeout awscdk.Duration
	// TerminateHeartbeatTimeout is the terminate hook's timeout: at least
	// TerminateHeartbeatMinSeconds (the lifecycle Lambda's timeout times its
	// tries plus Lambda's retry delays), at most 2 hours. Default 20 minutes;
	// volsd completes the hook as soon as the volume is released.
	TerminateHeartbeatTimeout awscdk.Duration
	// SkipLifecycleHooks leaves the hooks out: set it when the group is
	// created in the same app and takes LifecycleHookSpecifications() itself,
	// so that the instances launched with the group get hooks too.
	SkipLifecycleHooks bool

	// DocumentPrefix prefixes the SSM document names: "<prefix>Apply" etc.
	// Default "volsd-" (docs/contracts.md). SSM document names are unique per
	// account and region, so a second pool in the same account and region
	// must use its own prefix, e.g. "volsd-<pool>-".
	DocumentPrefix string

	// LambdaAssetDir holds <name>/bootstrap for each function (make build).
	// Default "build/lambda", relative to the working directory (the repo root
	// under `cdk synth`).
	LambdaAssetDir string

	// RemovalPolicy applies to the table and the bucket. Default RETAIN.
	RemovalPolicy awscdk.RemovalPolicy
	// AccessLogsBucket receives the origin bucket's server access logs; nil = none.
	AccessLogsBucket awss3.IBucket
	// AlarmActions are added to every alarm (e.g. an SNS topic action).
	AlarmActions []awscloudwatch.IAlarmAction

	// LogLevel is VOLSD_LOG_LEVEL. Default info.
	LogLevel string
	// SSMMaxConcurrency and SSMMaxErrors for push's SendCommand. Defaults push.DefaultMaxConcurrency and push.DefaultMaxErrors (50% and 100%).
	SSMMaxConcurrency string
	SSMMaxErrors      string
}

// withDefaults fills in the defaults and validates props: what only the
// construct uses here, and every setting a Lambda reads through the
// Lambdas' own validation (checkFunctionSettings). It returns an error
// naming the bad field and its rule.
func (p PoolProps) withDefaults() (PoolProps, error) {
	if !envconfig.PoolName.MatchString(p.PoolName) {
		return p, fmt.Errorf("volsd: PoolName %q: must be 1-64 letters, digits, '-' or '_'", p.PoolName)
	}
	if p.AutoScalingGroupName == "" && p.AutoScalingGroup == nil {
		return p, fmt.Errorf("volsd: pool %s: AutoScalingGroupName or AutoScalingGroup is required", p.PoolName)
	}
	if p.AutoScalingGroupName != "" && p.AutoScalingGroup != nil {
		return p, fmt.Errorf("volsd: pool %s: give AutoScalingGroupName or AutoScalingGroup, not both", p.PoolName)
	}
	if p.IdlePerAZ == nil {
		one := 1
		p.IdlePerAZ = &one
	}
	if p.VolumeSizeGiB == 0 {
		p.VolumeSizeGiB = 10
	}
	if p.VolumeType == "" {
		p.VolumeType = "gp3"
	}
	if p.ReleasePolicy == "" {
		p.ReleasePolicy = ReleaseRecycle
	}
	if p.Filesystem == "" {
		p.Filesystem = "ext4"
	}
	if p.Filesystem != "ext4" && p.Filesystem != "xfs" {
		return p, fmt.Errorf("volsd: pool %s: Filesystem %q: must be ext4 or xfs", p.PoolName, p.Filesystem)
	}
	if p.MountPath == "" {
		p.MountPath = "/srv/volsd"
	}
	if !regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`).MatchString(p.MountPath) || regexp.MustCompile(`/\.\.?(/|$)`).MatchString(p.MountPath) {
		return p, fmt.Errorf("volsd: pool %s: MountPath %q: must be an absolute path of plain segments", p.PoolName, p.MountPath)
	}
	if p.ReconcileInterval == nil {
		p.ReconcileInterval = awscdk.Duration_Minutes(f(5))
	}
	if p.SnapshotInterval == nil {
		p.SnapshotInterval = awscdk.Duration_Hours(f(snapshot.DefaultInterval.Hours()))
	}
	if p.SnapshotKeep == 0 {
		p.SnapshotKeep = 3
	}
	if p.FreezeSeconds == 0 {
		p.FreezeSeconds = 30
	}
	if p.AutoGrowStepGiB == 0 {
		p.AutoGrowStepGiB = 10
	}
	if p.FillAlarmPercent == 0 {
		p.FillAlarmPercent = 90
	}
	if p.ReclaimGrace == 0 {
		p.ReclaimGrace = reclaim.DefaultGrace
	}
	if p.LaunchHeartbeatTimeout == nil {
		p.LaunchHeartbeatTimeout = awscdk.Duration_Minutes(f(15))
	}
	if p.TerminateHeartbeatTimeout == nil {
		p.TerminateHeartbeatTimeout = awscdk.Duration_Minutes(f(20))
	}
	if s := *p.TerminateHeartbeatTimeout.ToSeconds(nil); s < TerminateHeartbeatMinSeconds() || s > 7200 {
		return p, fmt.Errorf("volsd: pool %s: TerminateHeartbeatTimeout %gs: must be %g..7200 s: longer than the lifecycle Lambda's "+
			"timeout times its %d tries plus Lambda's retry delays, so a retried terminate still finds its hook", p.PoolName, s,
			TerminateHeartbeatMinSeconds(), 1+AsyncRetryAttempts)
	}
	if p.DocumentPrefix == "" {
		p.DocumentPrefix = events.DefaultDocumentPrefix
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_.-]{3,100}$`).MatchString(p.DocumentPrefix) || hasReservedPrefix(p.DocumentPrefix) {
		return p, fmt.Errorf("volsd: pool %s: DocumentPrefix %q: must be 3-100 of letters, digits, '_', '-', '.' and not start with aws, amazon or amzn", p.PoolName, p.DocumentPrefix)
	}
	if p.LambdaAssetDir == "" {
		p.LambdaAssetDir = "build/lambda"
	}
	if p.RemovalPolicy == "" {
		p.RemovalPolicy = awscdk.RemovalPolicy_RETAIN
	}
	if p.LogLevel == "" {
		p.LogLevel = "info"
	}
	if p.SSMMaxConcurrency == "" {
		p.SSMMaxConcurrency = push.DefaultMaxConcurrency
	}
	if p.SSMMaxErrors == "" {
		p.SSMMaxErrors = push.DefaultMaxErrors
	}
	if err := checkFunctionSettings(p); err != nil {
		return p, err
	}
	return p, nil
}

func hasReservedPrefix(s string) bool {
	return regexp.MustCompile(`(?i)^(aws|amazon|amzn)`).MatchString(s)
}

func f(v float64) *float64 { return &v }
