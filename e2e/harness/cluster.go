package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/internal/lambdaruntime"
	"github.com/volsd/volsd/internal/store"
)

// Local-run identity: moto's default account and the region the tests use.
const (
	Region    = "us-east-1"
	Account   = "123456789012"
	accessKey = "testing"
	secretKey = "testing"
)

// volsd's lifecycle hooks (the template puts them on the group).
const (
	LaunchHookName    = events.LaunchHookName
	TerminateHookName = events.TerminateHookName
)

// Options configure a local volsd cluster.
type Options struct {
	DynamoDBURL, MotoURL string
	Binaries             *Binaries
	// WorkDir holds images, instance trees, logs; "" = a new temp dir,
	// removed at Close.
	WorkDir string
	Pool    string
	AZs     []string // two AZs by default
	// Pool settings: the CDK context the pool stack is synthesized with
	// (0 or "" = the app's default). Every Lambda's environment, timeout
	// and memory, the rules, the event source, the queue, the hooks, the
	// table and the documents then come from that template.
	IdlePerAZ     int
	VolumeSizeGiB int
	ReleasePolicy string
	SnapshotKeep  int
	LogLevel      string
	// Context adds CDK context values (-c key=value) for the synth.
	Context map[string]string

	// Local deviations from the template, each explicit (0 = the
	// template's value; Deviations lists those in effect): shorter hook
	// heartbeats, push queue visibility and push timeout, so that a local
	// run waits seconds where AWS waits minutes. The push timeout is never
	// above the queue's visibility (Lambda requires it).
	LaunchHeartbeat, TerminateHeartbeat time.Duration
	QueueVisibility                     time.Duration
	PushTimeout                         time.Duration
	// LambdaEnv adds Lambda variables the template does not set (e.g.
	// VOLSD_REFRESH_BEHIND); a variable the template sets is refused.
	LambdaEnv map[string]string
	// AsyncRetryDelay is the first retry delay of asynchronous invocations
	// (Lambda's is about a minute).
	AsyncRetryDelay time.Duration
	// Agents.
	ApplyInterval time.Duration
	UpRestart     time.Duration
	DeviceWait    time.Duration
	// AgentPath is the PATH of the simulated instances' agents ("" = the
	// systemd default, agent.DefaultProgramPath).
	AgentPath string

	// Observe, if set, is told what each Lambda's sandboxes do on the
	// Runtime API, with the function's short name (push, report, …) and
	// the time (the converge bench times its stages with it).
	Observe func(function string, o lambdaruntime.Observation)

	// Log is the harness's own log; component logs go to files in WorkDir/logs.
	Log *slog.Logger
}

func (o *Options) defaults() {
	if len(o.AZs) == 0 {
		o.AZs = []string{Region + "a", Region + "b"}
	}
	if o.Pool == "" {
		o.Pool = "web"
	}
	if o.AsyncRetryDelay == 0 {
		o.AsyncRetryDelay = 2 * time.Second
	}
	if o.UpRestart == 0 {
		o.UpRestart = 2 * time.Second
	}
	if o.DeviceWait == 0 {
		o.DeviceWait = 120 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// synthContext is the CDK context the pool stack is synthesized with.
func (c *Cluster) synthContext() map[string]string {
	o := c.Opts
	ctx := map[string]string{"pool": o.Pool, "asgName": c.Names.Group, "azs": strings.Join(o.AZs, ",")}
	set := func(k string, v string) {
		if v != "" && v != "0" {
			ctx[k] = v
		}
	}
	set("idlePerAz", strconv.Itoa(o.IdlePerAZ))
	if o.IdlePerAZ == 0 {
		ctx["idlePerAz"] = "0"
	}
	set("volumeSizeGiB", strconv.Itoa(o.VolumeSizeGiB))
	set("releasePolicy", o.ReleasePolicy)
	set("snapshotKeep", strconv.Itoa(o.SnapshotKeep))
	set("logLevel", o.LogLevel)
	for k, v := range o.Context {
		ctx[k] = v
	}
	return ctx
}

// Names are the AWS resources of one cluster.
type Names struct {
	Pool, Table, Bucket, Group, LaunchTemplate string
	QueueURL, QueueARN, DLQURL, DLQARN         string
	Subnets                                    map[string]string
}

// Cluster is volsd on one machine: emulators behind the proxy, the five
// Lambdas as bootstrap processes behind Runtime API servers, simulated
// instances with loop-device volumes and real agents, the Auto Scaling
// group engine and the event routing of the CDK stack.
type Cluster struct {
	Opts  Options
	Names Names

	Proxy      *Proxy
	Lifecycle  *Lifecycle
	EBS        *EBS
	RunCommand *RunCommand
	Disks      *Disks
	Fleet      *Fleet
	Group      *Group
	WarmPool   *WarmPool
	Functions  map[string]*lambdaruntime.Function
	PushSource *SQSSource

	EC2 *ec2.Client
	ASG *autoscaling.Client
	SQS *sqs.Client
	S3  *s3.Client
	DDB *dynamodb.Client
	// Store reads the table directly (for checks).
	Store *store.Store
	// Template is the synthesized pool stack the run is wired from, Wiring
	// what it took out of it.
	Template *assembly.Template
	Wiring   *Wiring

	workDir    string
	ownWorkDir bool
	logMu      sync.Mutex
	logs       map[string]*os.File
	ctx        context.Context
	cancel     context.CancelFunc
	asyncErrs  []error
	mu         sync.Mutex
	closeOnce  sync.Once
}

// Start builds the whole local system. Close it even when Start fails.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.defaults()
	c := &Cluster{Opts: opts, Functions: map[string]*lambdaruntime.Function{}, logs: map[string]*os.File{}}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := Preflight(); err != nil {
		return c, err
	}
	SweepStale(opts.Log)
	if opts.WorkDir == "" {
		d, err := os.MkdirTemp("", "volsd-e2e-")
		if err != nil {
			return c, err
		}
		opts.WorkDir, c.ownWorkDir = d, true
		c.Opts.WorkDir = d
	}
	c.workDir = opts.WorkDir
	if err := os.WriteFile(filepath.Join(c.workDir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return c, err
	}
	if err := os.MkdirAll(filepath.Join(c.workDir, "logs"), 0o755); err != nil {
		return c, err
	}
	motoCfg, err := awsConfig(ctx, opts.MotoURL)
	if err != nil {
		return c, err
	}
	ddbCfg, err := awsConfig(ctx, opts.DynamoDBURL)
	if err != nil {
		return c, err
	}
	c.EC2 = ec2.NewFromConfig(motoCfg)
	c.ASG = autoscaling.NewFromConfig(motoCfg)
	c.SQS = sqs.NewFromConfig(motoCfg)
	c.S3 = s3.NewFromConfig(motoCfg, func(o *s3.Options) { o.UsePathStyle = true })
	c.DDB = dynamodb.NewFromConfig(ddbCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })

	suffix := randomSuffix()
	c.Names = Names{
		Pool:           opts.Pool,
		Table:          "volsd-" + opts.Pool + "-" + suffix,
		Bucket:         bucketName(opts.Pool, suffix),
		Group:          "volsd-" + opts.Pool + "-web-" + suffix,
		LaunchTemplate: "volsd-" + opts.Pool + "-lt-" + suffix,
	}
	c.Store = store.New(c.DDB, c.Names.Table)
	if opts.Binaries == nil {
		return c, errors.New("no binaries: build them with Build first")
	}
	root, err := RepoRoot()
	if err != nil {
		return c, err
	}
	c.Template, err = Synthesize(ctx, SynthInput{Root: root, Dir: c.workDir, Context: c.synthContext(),
		LambdaDir: filepath.Dir(filepath.Dir(opts.Binaries.Bootstrap["push"]))})
	if err != nil {
		return c, err
	}
	if c.Wiring, err = ReadWiring(c.Template); err != nil {
		return c, fmt.Errorf("wiring of %s: %w", c.Template.File, err)
	}
	if err := c.checkLambdaEnv(); err != nil {
		return c, err
	}
	if err := c.createResources(ctx); err != nil {
		return c, err
	}

	// Simulation.
	c.Disks, err = NewDisks(filepath.Join(c.workDir, "ebs"))
	if err != nil {
		return c, err
	}
	c.Fleet = NewFleet()
	c.Proxy, err = NewProxy(opts.MotoURL, opts.Log.With("part", "proxy"))
	if err != nil {
		return c, err
	}
	c.Lifecycle = NewLifecycle(c.Proxy, c.ASG, opts.Log.With("part", "autoscaling"))
	c.EBS = NewEBS(c.Proxy, c.EC2, c.Disks, c.Fleet, opts.Log.With("part", "ebs"))
	c.RunCommand = NewRunCommand(c.Proxy, c.Fleet, c.EC2, c.Wiring.Documents, Account, Region, opts.Log.With("part", "ssm"))
	if err := c.Proxy.Start(); err != nil {
		return c, err
	}

	for _, name := range FunctionNames {
		spec := c.Wiring.Functions[name]
		env, err := c.lambdaEnv(name)
		if err != nil {
			return c, err
		}
		c.Functions[name] = &lambdaruntime.Function{
			Name: "volsd-" + opts.Pool + "-" + name, Bootstrap: opts.Binaries.Bootstrap[name],
			Env: env, Timeout: c.functionTimeout(name), MemoryMiB: spec.MemoryMiB, MaxRetryAttempts: spec.MaxRetryAttempts,
			MaxConcurrency: 3, Stdout: c.logFile("lambda-" + name), Stderr: c.logFile("lambda-" + name),
			Region: Region, Account: Account, Logger: opts.Log,
		}
		if opts.Observe != nil {
			fn := name
			c.Functions[name].Observe = func(o lambdaruntime.Observation) { opts.Observe(fn, o) }
		}
	}
	// EventBridge: every event goes to the targets of the rules whose
	// patterns match it.
	c.RunCommand.SSM.OnEvent = c.route
	c.RunCommand.SSM.OnCommandEvent = c.route
	c.PushSource = &SQSSource{
		SQS: c.SQS, QueueURL: c.Names.QueueURL, QueueARN: c.Names.QueueARN, Region: Region,
		Fn: c.Functions[c.Wiring.Push.Function], BatchSize: c.Wiring.Push.BatchSize, Window: c.Wiring.Push.Window,
		ReportBatchItemFailures: c.Wiring.Push.ReportBatchItemFailures, Pollers: 2,
		Log: opts.Log.With("part", "sqs-event-source"),
	}
	c.PushSource.Start(c.ctx)

	c.Group = &Group{
		Name: c.Names.Group, Pool: opts.Pool, Subnets: c.Names.Subnets, LaunchTemplate: c.Names.LaunchTemplate,
		Region: Region, Account: Account, EC2: c.EC2, ASG: c.ASG, Lifecycle: c.Lifecycle,
		Log:      opts.Log.With("part", "group"),
		Boot:     c.boot,
		PowerOff: c.powerOff,
		Stuck:    c.stuck,
		Deliver: func(_ context.Context, ev events.Envelope) {
			raw, _ := json.Marshal(ev)
			c.route(raw)
		},
	}
	c.WarmPool = &WarmPool{Group: c.Group, Stop: c.stopMachine, Start: c.restartMachine}
	return c, nil
}

func awsConfig(ctx context.Context, endpoint string) (aws.Config, error) {
	if endpoint == "" {
		return aws.Config{}, errors.New("emulator endpoint missing (run under scripts/with-emulators.sh)")
	}
	return config.LoadDefaultConfig(ctx,
		config.WithRegion(Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")),
		config.WithBaseEndpoint(endpoint),
		config.WithRetryMaxAttempts(5),
	)
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// createResources makes what the CDK stack would: table, origin bucket,
// push queue with DLQ, VPC with a subnet per AZ, launch template, the group
// with its hooks.
// bucketName is the origin bucket's name: S3 allows 63 lowercase
// characters, so a long pool name (a long test's name) keeps its end,
// where testenv.UniqueName puts its random part.
func bucketName(pool, suffix string) string {
	room := 63 - len("volsd--origin-"+suffix)
	pool = strings.ToLower(pool)
	if len(pool) > room {
		pool = strings.TrimLeft(pool[len(pool)-room:], "-_.")
	}
	return "volsd-" + strings.ReplaceAll(pool, "_", "-") + "-origin-" + suffix
}

func (c *Cluster) createResources(ctx context.Context) error {
	if err := c.createTable(ctx); err != nil {
		return err
	}
	if _, err := c.S3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &c.Names.Bucket}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	if _, err := c.S3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: &c.Names.Bucket,
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
		return fmt.Errorf("bucket versioning: %w", err)
	}
	dlq, err := c.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("volsd-" + c.Opts.Pool + "-push-dlq-" + c.Names.Table[len(c.Names.Table)-8:])})
	if err != nil {
		return fmt.Errorf("create DLQ: %w", err)
	}
	c.Names.DLQURL = aws.ToString(dlq.QueueUrl)
	c.Names.DLQARN, err = c.queueARN(ctx, c.Names.DLQURL)
	if err != nil {
		return err
	}
	qs := c.Wiring.Queue
	redrive, _ := json.Marshal(map[string]string{"deadLetterTargetArn": c.Names.DLQARN, "maxReceiveCount": strconv.Itoa(qs.MaxReceiveCount)})
	q, err := c.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String("volsd-" + c.Opts.Pool + "-push-" + c.Names.Table[len(c.Names.Table)-8:]),
		Attributes: map[string]string{
			"VisibilityTimeout":      strconv.Itoa(int(c.queueVisibility().Seconds())),
			"MessageRetentionPeriod": strconv.Itoa(int(qs.Retention.Seconds())),
			"RedrivePolicy":          string(redrive),
		},
	})
	if err != nil {
		return fmt.Errorf("create queue: %w", err)
	}
	c.Names.QueueURL = aws.ToString(q.QueueUrl)
	c.Names.QueueARN, err = c.queueARN(ctx, c.Names.QueueURL)
	if err != nil {
		return err
	}

	vpc, err := c.EC2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.20.0.0/16")})
	if err != nil {
		return fmt.Errorf("create VPC: %w", err)
	}
	c.Names.Subnets = map[string]string{}
	var subnetIDs []string
	for i, az := range c.Opts.AZs {
		sn, err := c.EC2.CreateSubnet(ctx, &ec2.CreateSubnetInput{
			VpcId: vpc.Vpc.VpcId, AvailabilityZone: aws.String(az), CidrBlock: aws.String(fmt.Sprintf("10.20.%d.0/24", i+1)),
		})
		if err != nil {
			return fmt.Errorf("create subnet in %s: %w", az, err)
		}
		c.Names.Subnets[az] = aws.ToString(sn.Subnet.SubnetId)
		subnetIDs = append(subnetIDs, aws.ToString(sn.Subnet.SubnetId))
	}
	if _, err := c.EC2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: &c.Names.LaunchTemplate,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12c6146b"), InstanceType: ec2types.InstanceTypeM7gLarge},
	}); err != nil {
		return fmt.Errorf("create launch template: %w", err)
	}
	if _, err := c.ASG.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &c.Names.Group,
		LaunchTemplate:       &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &c.Names.LaunchTemplate, Version: aws.String("$Latest")},
		MinSize:              aws.Int32(0), MaxSize: aws.Int32(20), DesiredCapacity: aws.Int32(0),
		VPCZoneIdentifier: aws.String(strings.Join(subnetIDs, ",")),
		Tags: []asgtypes.Tag{
			{Key: aws.String(events.TagPool), Value: &c.Opts.Pool, PropagateAtLaunch: aws.Bool(true)},
			{Key: aws.String("Name"), Value: aws.String("volsd-" + c.Opts.Pool + "-web"), PropagateAtLaunch: aws.Bool(true)},
		},
	}); err != nil {
		return fmt.Errorf("create group: %w", err)
	}
	for _, h := range c.Wiring.Hooks {
		if _, err := c.ASG.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
			AutoScalingGroupName: &c.Names.Group, LifecycleHookName: aws.String(h.Name),
			LifecycleTransition: aws.String(h.Transition), DefaultResult: aws.String(h.DefaultResult),
			HeartbeatTimeout: aws.Int32(int32(c.heartbeat(h).Seconds())),
		}); err != nil {
			return fmt.Errorf("put hook %s: %w", h.Name, err)
		}
	}
	return nil
}

// createTable creates the table as the template defines it: key schema,
// attributes, indexes, billing, TTL.
func (c *Cluster) createTable(ctx context.Context) error {
	b, _ := json.Marshal(c.Wiring.Table.Properties)
	var in dynamodb.CreateTableInput
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("table %s of the template: %w", c.Wiring.Table.LogicalID, err)
	}
	in.TableName = &c.Names.Table
	in.DeletionProtectionEnabled = nil // a local table goes with the run
	if _, err := c.DDB.CreateTable(ctx, &in); err != nil {
		return fmt.Errorf("create table %s: %w", c.Names.Table, err)
	}
	w := dynamodb.NewTableExistsWaiter(c.DDB, func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 100 * time.Millisecond })
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: &c.Names.Table}, 2*time.Minute); err != nil {
		return fmt.Errorf("wait for table %s: %w", c.Names.Table, err)
	}
	if ttl := c.Wiring.Table.TTLAttribute; ttl != "" {
		if _, err := c.DDB.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{TableName: &c.Names.Table,
			TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{AttributeName: &ttl, Enabled: aws.Bool(true)}}); err != nil {
			return fmt.Errorf("enable TTL on %s: %w", c.Names.Table, err)
		}
	}
	return nil
}

// heartbeat is hook h's heartbeat timeout: the template's, or the local
// run's shorter one (Options).
func (c *Cluster) heartbeat(h HookSpec) time.Duration {
	switch {
	case h.Transition == events.TransitionLaunching && c.Opts.LaunchHeartbeat > 0:
		return c.Opts.LaunchHeartbeat
	case h.Transition == events.TransitionTerminating && c.Opts.TerminateHeartbeat > 0:
		return c.Opts.TerminateHeartbeat
	}
	return h.HeartbeatTimeout
}

// queueVisibility is the push queue's visibility timeout: the template's or
// the local run's (Options.QueueVisibility).
func (c *Cluster) queueVisibility() time.Duration {
	if c.Opts.QueueVisibility > 0 {
		return c.Opts.QueueVisibility
	}
	return c.Wiring.Queue.VisibilityTimeout
}

// functionTimeout is fn's timeout: the template's; for the push function
// the local one (Options.PushTimeout), never above the queue's visibility.
func (c *Cluster) functionTimeout(fn string) time.Duration {
	t := c.Wiring.Functions[fn].Timeout
	if fn == c.Wiring.Push.Function {
		if c.Opts.PushTimeout > 0 {
			t = c.Opts.PushTimeout
		}
		t = min(t, c.queueVisibility())
	}
	return t
}

// Deviations lists where the local run differs from the template, as
// "what: template → local"; none without the Options that ask for them.
func (c *Cluster) Deviations() []string {
	var out []string
	for _, h := range c.Wiring.Hooks {
		if d := c.heartbeat(h); d != h.HeartbeatTimeout {
			out = append(out, fmt.Sprintf("hook %s heartbeat: %s → %s", h.Name, h.HeartbeatTimeout, d))
		}
	}
	if v := c.queueVisibility(); v != c.Wiring.Queue.VisibilityTimeout {
		out = append(out, fmt.Sprintf("push queue visibility: %s → %s", c.Wiring.Queue.VisibilityTimeout, v))
	}
	for _, fn := range FunctionNames {
		if t := c.functionTimeout(fn); t != c.Wiring.Functions[fn].Timeout {
			out = append(out, fmt.Sprintf("%s timeout: %s → %s", fn, c.Wiring.Functions[fn].Timeout, t))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Opts.LambdaEnv)) {
		out = append(out, fmt.Sprintf("extra Lambda variable %s=%s", k, c.Opts.LambdaEnv[k]))
	}
	return out
}

// checkLambdaEnv refuses extra variables that the template sets: those are
// changed through the template (Options, Context), not beside it.
func (c *Cluster) checkLambdaEnv() error {
	for k := range c.Opts.LambdaEnv {
		for _, fn := range FunctionNames {
			if _, ok := c.Wiring.Functions[fn].Env[k]; ok {
				return fmt.Errorf("LambdaEnv %s: the template sets it for %s; set it through the pool settings (Options or Context), not beside the template", k, fn)
			}
		}
	}
	return nil
}

// physical maps the template's placeholders (Resolve) to this run's
// resources.
func (c *Cluster) physical() (map[string]string, error) {
	bucket, err := c.Template.One("AWS::S3::Bucket", "Origin")
	if err != nil {
		return nil, err
	}
	q, dlq := c.Wiring.Queue.LogicalID, c.Wiring.Queue.DLQLogicalID
	return map[string]string{
		c.Wiring.Table.LogicalID: c.Names.Table, bucket.ID: c.Names.Bucket,
		q: c.Names.QueueURL, q + ".Arn": c.Names.QueueARN, dlq: c.Names.DLQURL, dlq + ".Arn": c.Names.DLQARN,
	}, nil
}

// route delivers an event as EventBridge does: to the target function of
// every enabled rule whose pattern matches it (asynchronous invocations).
func (c *Cluster) route(raw []byte) {
	fns, err := c.Wiring.Route(raw)
	if err != nil {
		c.Opts.Log.Error("event routing", "err", err)
		c.mu.Lock()
		c.asyncErrs = append(c.asyncErrs, err)
		c.mu.Unlock()
		return
	}
	if len(fns) == 0 {
		return
	}
	var ev events.Envelope
	if err := json.Unmarshal(raw, &ev); err != nil {
		return
	}
	for _, fn := range fns {
		c.deliverAsync(fn, ev)
	}
}

func (c *Cluster) queueARN(ctx context.Context, url string) (string, error) {
	out, err := c.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &url, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		return "", fmt.Errorf("queue ARN of %s: %w", url, err)
	}
	return out.Attributes["QueueArn"], nil
}

// lambdaEnv is function name's environment as the template sets it (its
// references resolved to this run's resources), plus the extra variables of
// Options.LambdaEnv and the local endpoints and credentials Lambda would
// provide.
func (c *Cluster) lambdaEnv(name string) ([]string, error) {
	phys, err := c.physical()
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for k, v := range c.Wiring.Functions[name].Env {
		r, err := Resolve(v, phys)
		if err != nil {
			return nil, fmt.Errorf("%s environment %s=%s: %w", name, k, v, err)
		}
		env[k] = r
	}
	for k, v := range c.Opts.LambdaEnv {
		env[k] = v
	}
	out := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"AWS_REGION=" + Region, "AWS_DEFAULT_REGION=" + Region,
		"AWS_ACCESS_KEY_ID=ASIAVOLSDLAMBDA" + strings.ToUpper(name[:3]), "AWS_SECRET_ACCESS_KEY=local", "AWS_SESSION_TOKEN=local",
		"AWS_ENDPOINT_URL=" + c.Proxy.URL(), "AWS_ENDPOINT_URL_DYNAMODB=" + c.Opts.DynamoDBURL,
		"AWS_CONFIG_FILE=" + filepath.Join(c.workDir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(c.workDir, "no-aws-credentials"),
		"LAMBDA_TASK_ROOT=" + filepath.Dir(c.Opts.Binaries.Bootstrap[name]),
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// logFile returns the shared, line-prefixed log file for a component.
func (c *Cluster) logFile(name string) io.Writer {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	f, ok := c.logs[name]
	if !ok {
		var err error
		f, err = os.OpenFile(filepath.Join(c.workDir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return io.Discard
		}
		c.logs[name] = f
	}
	return f
}

// LogDir is where component logs are.
func (c *Cluster) LogDir() string { return filepath.Join(c.workDir, "logs") }

// WorkDir is the cluster's directory.
func (c *Cluster) WorkDir() string { return c.workDir }

func (c *Cluster) deliverAsync(fn string, ev events.Envelope) {
	payload, _ := json.Marshal(ev)
	c.Functions[fn].InvokeAsync(c.ctx, payload, c.Opts.AsyncRetryDelay, func(err error) {
		if err != nil && c.ctx.Err() == nil {
			c.mu.Lock()
			c.asyncErrs = append(c.asyncErrs, fmt.Errorf("%s (%s): %w", fn, ev.DetailType, err))
			c.mu.Unlock()
			c.Opts.Log.Error("asynchronous invocation failed after retries (event DLQ)", "function", fn, "detailType", ev.DetailType, "err", err)
		}
	})
}

// AsyncErrors returns asynchronous invocations that failed after Lambda's
// retries (they would be in the event DLQ).
func (c *Cluster) AsyncErrors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error{}, c.asyncErrs...)
}

func (c *Cluster) agentSettings() *AgentSettings {
	return &AgentSettings{
		Binary: c.Opts.Binaries.Agent, Pool: c.Opts.Pool, Table: c.Names.Table, Bucket: c.Names.Bucket,
		ASG: c.Names.Group, LaunchHook: LaunchHookName, ProxyURL: c.Proxy.URL(), DynamoDBURL: c.Opts.DynamoDBURL,
		DeviceWait: c.Opts.DeviceWait, UpRestart: c.Opts.UpRestart, Path: c.Opts.AgentPath, ApplyInterval: c.Opts.ApplyInterval,
		Log: c.logFile("agents"), LogMu: &c.logMu,
	}
}

func (c *Cluster) boot(ctx context.Context, id, az string) error {
	in, err := BootInstance(id, az, Region, Account, filepath.Join(c.workDir, "instances", id), c.agentSettings(), c.Opts.Log)
	if err != nil {
		return err
	}
	c.Fleet.Add(in)
	// The machine boots with its root EBS volume (moto made it at
	// RunInstances), as on Nitro: the agent must tell it from the pool's.
	root, err := c.EBS.RootVolume(ctx, id)
	if err != nil {
		return fmt.Errorf("root volume of %s: %w", id, err)
	}
	if root != "" {
		return PublishRoot(root, in.Tree)
	}
	return nil
}

// stuck is closed with the agent's error once the instance's `up` keeps
// failing in a way waiting cannot heal (nil channel: no such instance).
func (c *Cluster) stuck(id string) (<-chan struct{}, func() error) {
	in, ok := c.Fleet.Get(id)
	if !ok {
		return nil, func() error { return nil }
	}
	return in.Stuck(), in.StuckError
}

func (c *Cluster) powerOff(ctx context.Context, id string) error {
	if in, ok := c.Fleet.Get(id); ok {
		in.Shutdown()
	}
	c.Fleet.Remove(id)
	return c.EBS.ForceDetachAll(ctx, id)
}

// SetLambdaEnv changes variables of function fn, as a deploy of a new
// setting does: invocations after it start in sandboxes with the new
// environment.
func (c *Cluster) SetLambdaEnv(fn string, set map[string]string) {
	f := c.Functions[fn]
	var env []string
	for _, kv := range f.Env {
		if k, _, _ := strings.Cut(kv, "="); set[k] == "" {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	f.Reconfigure(env)
}

// Invoke runs function fn synchronously with payload.
func (c *Cluster) Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	f, ok := c.Functions[fn]
	if !ok {
		return nil, fmt.Errorf("no function %s", fn)
	}
	return f.Invoke(ctx, payload)
}

// Schedule delivers a "Scheduled Event" to fn (reconcile or snapshot) and
// waits for the invocation.
func (c *Cluster) Schedule(ctx context.Context, fn string) ([]byte, error) {
	rule := c.Wiring.ScheduleRule(fn)
	if rule == "" {
		return nil, fmt.Errorf("the template schedules no rule for %s", fn)
	}
	ev := events.Envelope{
		Version: "0", ID: lambdaruntime.NewRequestID(), DetailType: events.DetailTypeSchedule, Source: events.SourceSchedule,
		Account: Account, Time: time.Now().UTC().Truncate(time.Second), Region: Region,
		Resources: []string{fmt.Sprintf("arn:aws:events:%s:%s:rule/%s", Region, Account, rule)},
		Detail:    json.RawMessage(`{}`),
	}
	payload, _ := json.Marshal(ev)
	return c.Invoke(ctx, fn, payload)
}

// Settle waits until nothing is in flight: asynchronous invocations, SSM
// commands, the push queue.
func (c *Cluster) Settle(ctx context.Context) error { return c.settle(ctx, true) }

// SettleEvents waits for asynchronous invocations and SSM commands, not for
// the push queue (which may hold a message that keeps failing).
func (c *Cluster) SettleEvents(ctx context.Context) error { return c.settle(ctx, false) }

func (c *Cluster) settle(ctx context.Context, queue bool) error {
	quiet := 0
	for quiet < 3 {
		done := make(chan struct{})
		go func() {
			for _, f := range c.Functions {
				f.WaitAsync()
			}
			c.RunCommand.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		idle := true
		if queue {
			var err error
			if idle, err = c.PushSource.Idle(ctx); err != nil {
				return err
			}
		}
		if idle {
			quiet++
		} else {
			quiet = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// OutputsFile writes the stack outputs the CLI reads (cdk deploy
// --outputs-file shape: stack name → output name → value) and returns its
// path.
func (c *Cluster) OutputsFile() (string, error) {
	p := filepath.Join(c.workDir, "cdk-outputs.json")
	b, _ := json.MarshalIndent(map[string]map[string]string{
		"VolsdLocal": {
			"PoolName": c.Opts.Pool, "TableName": c.Names.Table, "BucketName": c.Names.Bucket,
			"QueueUrl": c.Names.QueueURL, "DeadLetterQueueUrl": c.Names.DLQURL, "Region": Region,
		},
	}, "", "  ")
	return p, os.WriteFile(p, b, 0o644)
}

// CLIEnv is the operator's environment for the CLI: credentials, region and
// the local endpoints.
func (c *Cluster) CLIEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + c.workDir,
		"AWS_REGION=" + Region, "AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey,
		"AWS_ENDPOINT_URL=" + c.Proxy.URL(), "AWS_ENDPOINT_URL_DYNAMODB=" + c.Opts.DynamoDBURL,
		"AWS_CONFIG_FILE=" + filepath.Join(c.workDir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(c.workDir, "no-aws-credentials"),
	}
}

// CLIResult is one run of the operator CLI.
type CLIResult struct {
	Stdout, Stderr string
	ExitCode       int
	Duration       time.Duration
}

// CLI runs `volsd args...` as the operator would.
func (c *Cluster) CLI(ctx context.Context, args ...string) (CLIResult, error) {
	cmd := exec.CommandContext(ctx, c.Opts.Binaries.CLI, args...)
	cmd.Env = c.CLIEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(&errb, c.logFile("cli"))
	start := time.Now()
	err := cmd.Run()
	r := CLIResult{Stdout: out.String(), Stderr: errb.String(), Duration: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.ExitCode = ee.ExitCode()
		return r, fmt.Errorf("volsd %s: exit %d: %s", strings.Join(args, " "), r.ExitCode, lastLines(r.Stderr, 5))
	}
	return r, err
}

// Close stops everything the cluster started and removes its work
// directory (when it made it): pollers, Lambdas, agents, mounts, loop
// devices, the proxy. Safe to call more than once.
func (c *Cluster) Close() error {
	var errs []error
	c.closeOnce.Do(func() {
		c.cancel()
		if c.PushSource != nil {
			c.PushSource.Stop()
		}
		if c.Fleet != nil {
			for _, in := range c.Fleet.All() {
				in.Shutdown()
			}
		}
		for _, f := range c.Functions {
			f.Close()
		}
		if c.EBS != nil {
			c.EBS.Close()
		}
		if c.Disks != nil {
			if err := c.Disks.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Proxy != nil {
			_ = c.Proxy.Close()
		}
		c.logMu.Lock()
		for _, f := range c.logs {
			_ = f.Close()
		}
		c.logMu.Unlock()
		if c.ownWorkDir && c.workDir != "" && os.Getenv("VOLSD_E2E_KEEP") == "" {
			// Images and instance trees are big; logs go with them unless kept.
			if err := os.RemoveAll(c.workDir); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// killUnder SIGKILLs the processes whose executable lies under dir: the
// Lambda sandboxes and agents a killed run started from its build there.
func killUnder(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range procs {
		target, err := os.Readlink(exe)
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(exe))); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// SweepStale cleans up after earlier local runs that were killed before
// they could (SIGKILL, power loss): for each volsd-e2e-* work directory
// whose owner process is gone, unmount what is mounted under it, detach
// loop devices over its images and remove it.
func SweepStale(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "volsd-e2e-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) == nil {
			continue // alive (or not ours to judge)
		}
		killUnder(d)
		mps, _ := mountsUnder(d)
		for _, mp := range mps {
			_ = exec.Command("fsfreeze", "--unfreeze", mp).Run()
			_ = exec.Command("umount", "-l", mp).Run()
		}
		out, _ := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && strings.HasPrefix(f[1], d+"/") {
				if mps, _ := mountPointsOf(f[0]); len(mps) > 0 {
					for _, mp := range mps {
						_ = exec.Command("umount", "-l", mp).Run()
					}
				}
				_ = exec.Command("losetup", "-d", f[0]).Run()
			}
		}
		if err := os.RemoveAll(d); err == nil {
			log.Info("removed the leftovers of a killed run", "dir", d)
		}
	}
}
