package volsd

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdadestinations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdaeventsources"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/internal/doctor"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/reclaim"
)

// Function settings. The push queue's visibility timeout is at least six
// times the push timeout (AWS's guidance for SQS event sources).
var functionSettings = map[string]struct {
	timeoutSeconds float64
	memoryMiB      float64
	description    string
}{
	"lifecycle": {pool.FunctionTimeout.Seconds(), 256, "volsd: claim, create and attach a volume on launch; release it on terminate"},
	"reconcile": {240, 256, "volsd: keep idle volumes per AZ and heal stuck state (schedule)"},
	"snapshot":  {300, 256, "volsd: freeze, snapshot and thaw an in-service volume; retention (schedule)"},
	"push":      {60, push.FunctionMemoryMiB, "volsd: append push requests to the journal and send volsd-Apply"},
	"report":    {30, 256, "volsd: record the agents' SSM command results"},
}

// AsyncRetryAttempts is how often Lambda retries a failed asynchronous
// invocation (the EventBridge-invoked functions).
const AsyncRetryAttempts = pool.AsyncRetryAttempts

// TerminateHeartbeatMinSeconds is the shortest terminate hook heartbeat
// timeout that outlasts every try of the lifecycle Lambda
// (pool.TerminateHeartbeatMin).
func TerminateHeartbeatMinSeconds() float64 { return pool.TerminateHeartbeatMin().Seconds() }

// PushQueueVisibilityFactor times the push timeout is the push queue's visibility timeout.
const PushQueueVisibilityFactor = 6

// Pool is the volsd backend for one pool. Create it with NewPool.
type Pool struct {
	constructs.Construct

	props     PoolProps
	groupName *string

	// Table is the pool's DynamoDB table (internal/store's layout).
	Table awsdynamodb.Table
	// Bucket is the S3 origin (blobs/<sha256>, manifests/<sha256>.json).
	Bucket awss3.Bucket
	// Queue receives push requests; DeadLetterQueue takes those that failed
	// events.PushMaxReceiveCount times.
	Queue           awssqs.Queue
	DeadLetterQueue awssqs.Queue
	// EventDeadLetterQueue takes EventBridge events that could not be
	// delivered and asynchronous Lambda invocations that failed all retries.
	EventDeadLetterQueue awssqs.Queue
	// Functions by name (FunctionNames).
	Functions map[string]awslambda.Function
	// Documents by kind (events.DocumentKinds).
	Documents map[string]awsssm.CfnDocument
	// rules are the EventBridge rules by construct ID (doctor.RuleIDs).
	rules map[string]awsevents.Rule
	// Alarms are the pool's CloudWatch alarms; Dashboard shows them.
	Alarms    []awscloudwatch.Alarm
	Dashboard awscloudwatch.Dashboard
}

// NewPool creates the backend of one pool. It panics with a message naming
// the bad property when props are invalid (CDK constructs fail at synth).
func NewPool(scope constructs.Construct, id string, props *PoolProps) *Pool {
	if props == nil {
		panic("volsd: NewPool: props are required")
	}
	p, err := props.withDefaults()
	if err != nil {
		panic(err.Error())
	}
	pool := &Pool{Construct: constructs.NewConstruct(scope, &id), props: p}
	if p.AutoScalingGroup != nil {
		pool.groupName = p.AutoScalingGroup.AutoScalingGroupName()
	} else {
		pool.groupName = jsii.String(p.AutoScalingGroupName)
	}
	awscdk.Tags_Of(pool.Construct).Add(jsii.String(events.TagPool), jsii.String(p.PoolName), &awscdk.TagProps{
		// CloudFormation's dashboard has no Tags in cfn-lint's schema yet.
		ExcludeResourceTypes: jsii.Strings("AWS::CloudWatch::Dashboard"),
	})

	pool.Table = newTable(pool, p)
	pool.Bucket = pool.newBucket()
	pool.newQueues()
	pool.newDocuments()
	pool.newFunctions()
	pool.newRules()
	if !p.SkipLifecycleHooks {
		pool.newLifecycleHooks()
	}
	pool.newAlarms()
	pool.newDashboard()
	return pool
}

// PoolName returns the pool's name.
func (p *Pool) PoolName() string { return p.props.PoolName }

// DocumentName returns the SSM document name of kind (Apply, Freeze, Thaw, Release, Status).
func (p *Pool) DocumentName(kind string) string { return p.props.DocumentPrefix + kind }

// AutoScalingGroupName returns the group's name (a token for a group construct).
func (p *Pool) AutoScalingGroupName() *string { return p.groupName }

func (p *Pool) stack() awscdk.Stack { return awscdk.Stack_Of(p.Construct) }

func (p *Pool) newBucket() awss3.Bucket {
	props := &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		MinimumTLSVersion: f(1.2),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		Versioned:         jsii.Bool(true),
		RemovalPolicy:     p.props.RemovalPolicy,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:                                  jsii.String("expire-noncurrent"),
			NoncurrentVersionExpiration:         awscdk.Duration_Days(f(30)),
			AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(f(7)),
		}},
	}
	if p.props.AccessLogsBucket != nil {
		props.ServerAccessLogsBucket = p.props.AccessLogsBucket
		props.ServerAccessLogsPrefix = jsii.String("volsd-" + p.props.PoolName + "/")
	}
	b := awss3.NewBucket(p.Construct, jsii.String("Origin"), props)
	if p.props.AccessLogsBucket == nil {
		suppress(b, "AwsSolutions-S1", "Server access logs are optional (PoolProps.AccessLogsBucket): the origin is written only by the operator CLI and read by the pool's roles; CloudTrail data events are the audit trail of choice.")
	}
	return b
}

func (p *Pool) newQueues() {
	p.DeadLetterQueue = awssqs.NewQueue(p.Construct, jsii.String("DeadLetterQueue"), &awssqs.QueueProps{
		Encryption:      awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:      jsii.Bool(true),
		RetentionPeriod: awscdk.Duration_Days(f(14)),
	})
	suppress(p.DeadLetterQueue, "AwsSolutions-SQS3", "This queue is the dead-letter queue of the push queue.")
	p.EventDeadLetterQueue = awssqs.NewQueue(p.Construct, jsii.String("EventDeadLetterQueue"), &awssqs.QueueProps{
		Encryption:      awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:      jsii.Bool(true),
		RetentionPeriod: awscdk.Duration_Days(f(14)),
	})
	suppress(p.EventDeadLetterQueue, "AwsSolutions-SQS3", "This queue is itself the dead-letter queue of the EventBridge targets and the on-failure destination of the Lambdas' asynchronous invocations.")
	pushTimeout := functionSettings["push"].timeoutSeconds
	p.Queue = awssqs.NewQueue(p.Construct, jsii.String("PushQueue"), &awssqs.QueueProps{
		Encryption:        awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		VisibilityTimeout: awscdk.Duration_Seconds(f(PushQueueVisibilityFactor * pushTimeout)),
		RetentionPeriod:   awscdk.Duration_Seconds(f(reclaim.MaxPushInFlight.Seconds())),
		DeadLetterQueue: &awssqs.DeadLetterQueue{
			Queue:           p.DeadLetterQueue,
			MaxReceiveCount: jsii.Number(events.PushMaxReceiveCount),
		},
	})
}

func (p *Pool) newDocuments() {
	p.Documents = map[string]awsssm.CfnDocument{}
	for _, kind := range events.DocumentKinds {
		content, err := documents.Content(kind)
		if err != nil {
			panic(err.Error())
		}
		p.Documents[kind] = awsssm.NewCfnDocument(p.Construct, jsii.String("Document"+kind), &awsssm.CfnDocumentProps{
			Name:         jsii.String(p.DocumentName(kind)),
			DocumentType: jsii.String("Command"),
			Content:      content,
			// A named document cannot be replaced (the new one would
			// collide with the old name): update it in place.
			UpdateMethod: jsii.String("NewVersion"),
		})
	}
}

// documentsSent lists the SSM documents each function sends: its IAM
// grant (ssm:SendCommand on these documents) and the names its
// environment carries (events.DocumentVariable).
var documentsSent = map[string][]string{
	"lifecycle": {events.DocRelease, events.DocStatus},
	"snapshot":  {events.DocFreeze, events.DocThaw},
	"push":      {events.DocApply},
}

// envRefs are the values of a Lambda environment that other resources
// give (tokens in the template).
type envRefs struct{ table, bucket, group, kms *string }

func (p *Pool) envRefs() envRefs {
	r := envRefs{table: p.Table.TableName(), bucket: p.Bucket.BucketName(), group: p.groupName, kms: jsii.String("")}
	if p.props.KmsKey != nil {
		r.kms = p.props.KmsKey.KeyArn()
	}
	return r
}

// environment returns the Lambda environment of function name (docs/contracts.md).
func (p *Pool) environment(name string) map[string]*string {
	return functionEnvironment(p.props, p.envRefs(), name)
}

func functionEnvironment(pp PoolProps, refs envRefs, name string) map[string]*string {
	env := map[string]*string{
		"VOLSD_POOL":      jsii.String(pp.PoolName),
		"VOLSD_TABLE":     refs.table,
		"VOLSD_LOG_LEVEL": jsii.String(pp.LogLevel),
	}
	kms := refs.kms
	volume := func() {
		env["VOLSD_IDLE_PER_AZ"] = jsii.String(strconv.Itoa(*pp.IdlePerAZ))
		env["VOLSD_VOLUME_SIZE_GIB"] = jsii.String(strconv.Itoa(pp.VolumeSizeGiB))
		env["VOLSD_VOLUME_TYPE"] = jsii.String(pp.VolumeType)
		env["VOLSD_VOLUME_IOPS"] = jsii.String(strconv.Itoa(pp.VolumeIops))
		env["VOLSD_VOLUME_THROUGHPUT"] = jsii.String(strconv.Itoa(pp.VolumeThroughput))
		env["VOLSD_VOLUME_INIT_RATE"] = jsii.String(strconv.Itoa(pp.VolumeInitRate))
		env["VOLSD_KMS_KEY_ID"] = kms
		env["VOLSD_SOURCE_SNAPSHOT"] = jsii.String(pp.SourceSnapshotID)
		env["VOLSD_RELEASE_POLICY"] = jsii.String(pp.ReleasePolicy)
	}
	docs := func(kinds ...string) {
		for _, kind := range kinds {
			env[events.DocumentVariable(kind)] = jsii.String(pp.DocumentPrefix + kind)
		}
	}
	switch name {
	case "lifecycle":
		env["VOLSD_ASG"] = refs.group
		volume()
		docs(documentsSent[name]...)
	case "reconcile":
		env["VOLSD_ASG"] = refs.group
		env["VOLSD_AZS"] = jsii.String(strings.Join(pp.AvailabilityZones, ","))
		env["VOLSD_AUTOGROW_FREE_PERCENT"] = jsii.String(strconv.Itoa(pp.AutoGrowFreePercent))
		env["VOLSD_AUTOGROW_STEP_GIB"] = jsii.String(strconv.Itoa(pp.AutoGrowStepGiB))
		env["VOLSD_AUTOGROW_MAX_GIB"] = jsii.String(strconv.Itoa(pp.AutoGrowMaxGiB))
		env["VOLSD_FILL_ALARM_PERCENT"] = jsii.String(strconv.Itoa(pp.FillAlarmPercent))
		volume()
	case "snapshot":
		env["VOLSD_ASG"] = refs.group
		env["VOLSD_KMS_KEY_ID"] = kms
		env["VOLSD_SNAPSHOT_KEEP"] = jsii.String(strconv.Itoa(pp.SnapshotKeep))
		env["VOLSD_FREEZE_SECONDS"] = jsii.String(strconv.Itoa(pp.FreezeSeconds))
		env["VOLSD_BUCKET"] = refs.bucket
		env["VOLSD_RECLAIM_GRACE"] = jsii.String(max(pp.ReclaimGrace, 0).String()) // NoReclaim: 0s, off
		docs(documentsSent[name]...)
	case "push":
		env["VOLSD_BUCKET"] = refs.bucket
		env["VOLSD_SSM_MAX_CONCURRENCY"] = jsii.String(pp.SSMMaxConcurrency)
		env["VOLSD_SSM_MAX_ERRORS"] = jsii.String(pp.SSMMaxErrors)
		docs(documentsSent[name]...)
	case "report":
		// The report Lambda takes the status of every volsd document.
		docs(events.DocumentKinds...)
	}
	return env
}

func (p *Pool) newFunctions() {
	p.Functions = map[string]awslambda.Function{}
	for _, name := range FunctionNames {
		s := functionSettings[name]
		id := strings.ToUpper(name[:1]) + name[1:]
		logs := awslogs.NewLogGroup(p.Construct, jsii.String(id+"Logs"), &awslogs.LogGroupProps{
			Retention:     awslogs.RetentionDays_ONE_MONTH,
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		})
		role := awsiam.NewRole(p.Construct, jsii.String(id+"Role"), &awsiam.RoleProps{
			AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
			Description: jsii.String("volsd " + p.props.PoolName + ": " + name + " Lambda"),
		})
		role.AddToPrincipalPolicy(statement("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"},
			[]*string{logs.LogGroupArn()}, nil))
		env := p.environment(name)
		props := &awslambda.FunctionProps{
			Description:  jsii.String(s.description),
			Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
			Architecture: awslambda.Architecture_ARM_64(),
			Handler:      jsii.String("bootstrap"),
			Code:         awslambda.Code_FromAsset(jsii.String(filepath.Join(p.props.LambdaAssetDir, name)), nil),
			Timeout:      awscdk.Duration_Seconds(f(s.timeoutSeconds)),
			MemorySize:   f(s.memoryMiB),
			Role:         role,
			LogGroup:     logs,
			Environment:  &env,
		}
		if name != "push" {
			// Invoked asynchronously by EventBridge: failed invocations go
			// to the event DLQ after Lambda's own retries.
			props.RetryAttempts = f(AsyncRetryAttempts)
			props.MaxEventAge = awscdk.Duration_Hours(f(1))
			props.OnFailure = awslambdadestinations.NewSqsDestination(p.EventDeadLetterQueue)
		}
		fn := awslambda.NewFunction(p.Construct, jsii.String(id), props)
		p.Functions[name] = fn
		p.grantFunction(name, role)
	}
	// No batching window (Lambda's default for SQS, 0 s): the pollers
	// invoke the push Lambda as soon as they receive messages, with up to
	// BatchSize of those visible at once, so pushes that arrive together
	// still become one journal batch and one SendCommand. A window of 1 s
	// held every lone push for the whole second (docs/benchmarks.md,
	// "Converge").
	p.Functions["push"].AddEventSource(awslambdaeventsources.NewSqsEventSource(p.Queue, &awslambdaeventsources.SqsEventSourceProps{
		BatchSize:               jsii.Number(10),
		ReportBatchItemFailures: jsii.Bool(true),
	}))
}

func (p *Pool) target(name string, maxAge awscdk.Duration) awsevents.IRuleTarget {
	return awseventstargets.NewLambdaFunction(p.Functions[name], &awseventstargets.LambdaFunctionProps{
		DeadLetterQueue: p.EventDeadLetterQueue,
		RetryAttempts:   f(8),
		MaxEventAge:     maxAge,
	})
}

// eventRule is a rule on events of source and detail types whose detail
// matches detail.
func (p *Pool) eventRule(id, what, source string, detailTypes []string, detail map[string]interface{}) awsevents.Rule {
	return p.rule(id, &awsevents.RuleProps{
		Description: jsii.String("volsd " + p.props.PoolName + ": " + what),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings(source),
			DetailType: jsii.Strings(detailTypes...),
			Detail:     &detail,
		},
	})
}

// rule creates the rule id and keeps it for the Rules output.
func (p *Pool) rule(id string, props *awsevents.RuleProps) awsevents.Rule {
	r := awsevents.NewRule(p.Construct, jsii.String(id), props)
	if p.rules == nil {
		p.rules = map[string]awsevents.Rule{}
	}
	p.rules[id] = r
	return r
}

func (p *Pool) newRules() {
	lifecycle := p.eventRule("LifecycleRule", "lifecycle actions of the pool's Auto Scaling group", "aws.autoscaling",
		[]string{"EC2 Instance-launch Lifecycle Action", "EC2 Instance-terminate Lifecycle Action"}, map[string]interface{}{
			"AutoScalingGroupName": []*string{p.groupName},
			// Other teams' hooks on the same group (log draining,
			// termination handlers) are theirs to complete.
			"LifecycleHookName": jsii.Strings(LaunchHookName, TerminateHookName),
		})
	lifecycle.AddTarget(p.target("lifecycle", p.props.LaunchHeartbeatTimeout))

	// An instance entered service: the lifecycle Lambda asks its agent
	// for its status (volsd-Status), so the instance record is ready with
	// its seq within seconds.
	inService := p.eventRule("LaunchSuccessfulRule", "instances of the pool's group that entered service", "aws.autoscaling",
		[]string{"EC2 Instance Launch Successful"}, map[string]interface{}{"AutoScalingGroupName": []*string{p.groupName}})
	inService.AddTarget(p.target("lifecycle", awscdk.Duration_Minutes(f(10))))

	reconcile := p.rule("ReconcileSchedule", &awsevents.RuleProps{
		Description: jsii.String("volsd " + p.props.PoolName + ": reconcile schedule"),
		Schedule:    awsevents.Schedule_Rate(p.props.ReconcileInterval),
	})
	reconcile.AddTarget(p.target("reconcile", p.props.ReconcileInterval))

	snapshot := p.rule("SnapshotSchedule", &awsevents.RuleProps{
		Description: jsii.String("volsd " + p.props.PoolName + ": snapshot schedule"),
		Schedule:    awsevents.Schedule_Rate(p.props.SnapshotInterval),
	})
	snapshot.AddTarget(p.target("snapshot", awscdk.Duration_Hours(f(1))))

	var names []*string
	for _, kind := range events.DocumentKinds {
		names = append(names, jsii.String(p.DocumentName(kind)))
	}
	// A finished command's results are read in pages of 50 invocations
	// (one SSM read per 50 instances, docs/push.md "functions/report");
	// an instance's failure is recorded at once, before the command ends,
	// so `volsd push --wait` and the stall alarm need not wait for the
	// slowest instance. Successful invocations are not delivered one by
	// one: they would cost one GetCommandInvocation each.
	report := p.eventRule("CommandStatusRule", "final statuses of volsd SSM commands", "aws.ssm",
		[]string{events.DetailTypeSSMCommand}, map[string]interface{}{"document-name": names, "status": jsii.Strings(events.CommandFinalStatuses...)})
	report.AddTarget(p.target("report", awscdk.Duration_Hours(f(1))))
	failures := p.eventRule("InvocationFailureRule", "failed invocations of volsd SSM commands", "aws.ssm",
		[]string{events.DetailTypeSSMStatus}, map[string]interface{}{"document-name": names, "status": jsii.Strings(events.InvocationFailureStatuses...)})
	failures.AddTarget(p.target("report", awscdk.Duration_Hours(f(1))))
}

// LifecycleHookSpecifications returns the launch and terminate hooks for a
// group created in the same app (CfnAutoScalingGroup.LifecycleHookSpecificationList),
// used with SkipLifecycleHooks.
func (p *Pool) LifecycleHookSpecifications() []*awsautoscaling.CfnAutoScalingGroup_LifecycleHookSpecificationProperty {
	meta := jsii.String(fmt.Sprintf(`{"pool":%q}`, p.props.PoolName))
	return []*awsautoscaling.CfnAutoScalingGroup_LifecycleHookSpecificationProperty{
		{
			LifecycleHookName:    jsii.String(LaunchHookName),
			LifecycleTransition:  jsii.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
			DefaultResult:        jsii.String(pool.LaunchHookDefaultResult),
			HeartbeatTimeout:     p.props.LaunchHeartbeatTimeout.ToSeconds(nil),
			NotificationMetadata: meta,
		},
		{
			LifecycleHookName:    jsii.String(TerminateHookName),
			LifecycleTransition:  jsii.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			DefaultResult:        jsii.String(pool.TerminateHookDefaultResult),
			HeartbeatTimeout:     p.props.TerminateHeartbeatTimeout.ToSeconds(nil),
			NotificationMetadata: meta,
		},
	}
}

func (p *Pool) newLifecycleHooks() {
	for i, spec := range p.LifecycleHookSpecifications() {
		id := []string{"LaunchHook", "TerminateHook"}[i]
		hook := awsautoscaling.NewCfnLifecycleHook(p.Construct, jsii.String(id), &awsautoscaling.CfnLifecycleHookProps{
			AutoScalingGroupName: p.groupName,
			LifecycleHookName:    spec.LifecycleHookName,
			LifecycleTransition:  spec.LifecycleTransition,
			DefaultResult:        spec.DefaultResult,
			HeartbeatTimeout:     spec.HeartbeatTimeout,
			NotificationMetadata: spec.NotificationMetadata,
		})
		// A hook without its rule and Lambda would hold launches until the
		// heartbeat timeout: create the hooks last.
		hook.Node().AddDependency(p.Functions["lifecycle"], p.Node().FindChild(jsii.String("LifecycleRule")), p.Documents[events.DocRelease])
	}
}

// AgentConfig is the content of /etc/volsd/agent.json for the pool's
// instances, with the field names of docs/contracts.md ("Agent configuration").
type AgentConfig struct {
	Pool          *string `json:"pool"`
	Table         *string `json:"table"`
	Bucket        *string `json:"bucket"`
	Region        *string `json:"region"`
	ASG           *string `json:"asg"`
	LifecycleHook *string `json:"lifecycleHook"`
	MountPath     *string `json:"mountPath"`
	FSType        *string `json:"fsType"`
}

// AgentConfig returns the agent's configuration (values may be tokens).
func (p *Pool) AgentConfig() *AgentConfig {
	return &AgentConfig{
		Pool:          jsii.String(p.props.PoolName),
		Table:         p.Table.TableName(),
		Bucket:        p.Bucket.BucketName(),
		Region:        p.stack().Region(),
		ASG:           p.groupName,
		LifecycleHook: jsii.String(LaunchHookName),
		MountPath:     jsii.String(p.props.MountPath),
		FSType:        jsii.String(p.props.Filesystem),
	}
}

// AgentConfigJSON returns AgentConfig as a JSON string token for user data.
func (p *Pool) AgentConfigJSON() *string {
	c := p.AgentConfig()
	return p.stack().ToJsonString(map[string]interface{}{
		"pool":          c.Pool,
		"table":         c.Table,
		"bucket":        c.Bucket,
		"region":        c.Region,
		"asg":           c.ASG,
		"lifecycleHook": c.LifecycleHook,
		"mountPath":     c.MountPath,
		"fsType":        c.FSType,
	}, nil)
}

// Output names the CLI reads from `cdk deploy --outputs-file` (docs/contracts.md);
// volsd doctor also reads the group, the event dead-letter queue, the
// document prefix and the rules ("LifecycleRule=<name>,…" in the order of
// doctor.RuleIDs).
var OutputNames = []string{"PoolName", "TableName", "BucketName", "QueueUrl", "DeadLetterQueueUrl", "Region",
	"AutoScalingGroupName", "EventDeadLetterQueueUrl", "DocumentPrefix", "Rules"}

// rulesOutput is "ID=<rule name>,…" for doctor.RuleIDs.
func (p *Pool) rulesOutput() *string {
	if len(p.rules) != len(doctor.RuleIDs) {
		panic(fmt.Sprintf("volsd: the pool has %d rules, doctor.RuleIDs lists %d (newRules and doctor.RuleIDs disagree)", len(p.rules), len(doctor.RuleIDs)))
	}
	var parts []*string
	for i, id := range doctor.RuleIDs {
		r, ok := p.rules[id]
		if !ok {
			panic("volsd: no rule " + id + " (doctor.RuleIDs and newRules disagree)")
		}
		sep := ","
		if i == 0 {
			sep = ""
		}
		parts = append(parts, jsii.String(sep+id+"="), r.RuleName())
	}
	return awscdk.Fn_Join(jsii.String(""), &parts)
}

// AddOutputs adds the stack outputs the CLI reads, with exactly the logical
// IDs of OutputNames. Call it for at most one pool per stack.
func (p *Pool) AddOutputs() {
	values := map[string]*string{
		"PoolName":           jsii.String(p.props.PoolName),
		"TableName":          p.Table.TableName(),
		"BucketName":         p.Bucket.BucketName(),
		"QueueUrl":           p.Queue.QueueUrl(),
		"DeadLetterQueueUrl": p.DeadLetterQueue.QueueUrl(),
		"Region":             p.stack().Region(),

		"AutoScalingGroupName":    p.groupName,
		"EventDeadLetterQueueUrl": p.EventDeadLetterQueue.QueueUrl(),
		"DocumentPrefix":          jsii.String(p.props.DocumentPrefix),
		"Rules":                   p.rulesOutput(),
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out := awscdk.NewCfnOutput(p.stack(), jsii.String(n), &awscdk.CfnOutputProps{
			Value:       values[n],
			Description: jsii.String("volsd " + n),
		})
		out.OverrideLogicalId(jsii.String(n))
	}
}
